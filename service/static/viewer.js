// The fastsam-stream viewer: the grid of streams (index.html), one stream large (stream.html), and
// the sign-in page (login.html). Plain JavaScript, no dependencies, nothing fetched from elsewhere.
// Every piece of data is put on the page with textContent, never as HTML.
"use strict";

(() => {
  const POLL_MS = 1000; // /api/streams: state, fps, drops, latency, targets
  const RETRY_MS = 2000; // a broken frame stream or WebSocket is tried again after this
  const DRAG_PX = 5; // a press that moves further than this (on screen) is a box, not a click
  const MAX_EVENTS = 50; // events listed on the stream page
  // A browser opens at most 6 connections to one host over HTTP/1.1, and each MJPEG stream holds
  // one for as long as it plays; past this many tiles, the others fetch frame.jpg one after another
  // instead, so the page's own requests (and other tabs) still get through.
  const MAX_MJPEG_TILES = 3;
  const STILL_FRAME_MS = 100; // those tiles ask for a new frame at most this often
  // The colours the server draws each target in (sinks/video.py TARGET_COLOURS, there in BGR).
  const TARGET_COLOURS = [
    "rgb(255,200,0)", "rgb(0,120,255)", "rgb(60,220,80)", "rgb(220,60,220)",
    "rgb(255,60,60)", "rgb(0,255,255)", "rgb(255,128,0)", "rgb(255,80,160)",
  ];

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  const $ = (id) => document.getElementById(id);
  const streamPath = (id) => `/api/streams/${encodeURIComponent(id)}`;
  const targetColour = (id) => TARGET_COLOURS[(((id - 1) % TARGET_COLOURS.length) + TARGET_COLOURS.length) % TARGET_COLOURS.length];

  function setMessage(text, isError = false) {
    const el = $("message");
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("is-error", Boolean(text) && isError);
  }

  function toLogin() {
    const next = location.pathname + location.search;
    location.assign(`/login?next=${encodeURIComponent(next)}`);
  }

  // One request to the API: JSON both ways, the sign-in cookie sent along; an error answer
  // ({"error": "one line"}) becomes an ApiError with that line.
  async function api(path, { method = "GET", body } = {}) {
    const init = {
      method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
    };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await fetch(path, init);
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (response.status === 401 && document.body.dataset.page !== "login") {
      toLogin();
    }
    if (!response.ok) {
      const reason = data && typeof data.error === "string" ? data.error : `${response.status} ${response.statusText}`;
      throw new ApiError(reason, response.status);
    }
    return data;
  }

  function formatLatency(latency) {
    if (!latency || latency.p50 === null || latency.p50 === undefined) return "–";
    return `${Math.round(latency.p50)} / ${Math.round(latency.p99)} ms`;
  }

  function formatFps(fps) {
    return typeof fps === "number" ? fps.toFixed(1) : "–";
  }

  function setState(el, state) {
    el.textContent = state || "";
    el.className = `state state-${state || "unknown"}`;
  }

  // Keep showing a stream's frames: MJPEG while the stream plays; if the connection breaks
  // (the service restarted, the stream came back), start it again a little later.
  function playMjpeg(img, id) {
    let retry = null;
    const start = () => {
      retry = null;
      img.src = `${streamPath(id)}/mjpeg?t=${Date.now()}`;
    };
    img.onerror = () => {
      if (retry === null) retry = setTimeout(start, RETRY_MS);
    };
    start();
    return {
      restart: start,
      stop() {
        clearTimeout(retry);
        img.onerror = null;
        img.removeAttribute("src"); // closes the connection
      },
    };
  }

  // One still frame after another (frame.jpg), each asked for once the one before has loaded.
  function playStills(img, id) {
    let timer = null;
    let stopped = false;
    const next = () => {
      timer = null;
      if (!stopped) img.src = `${streamPath(id)}/frame.jpg?t=${Date.now()}`;
    };
    img.onload = () => {
      if (!stopped) timer = setTimeout(next, STILL_FRAME_MS);
    };
    img.onerror = () => {
      if (!stopped) timer = setTimeout(next, RETRY_MS); // 404: no frame yet
    };
    next();
    return {
      restart() {},
      stop() {
        stopped = true;
        clearTimeout(timer);
        img.onload = img.onerror = null;
        img.removeAttribute("src");
      },
    };
  }

  // ---- the grid: every stream, live ----

  function gridPage() {
    const grid = $("grid");
    const template = $("tile-template");
    const tiles = new Map(); // stream id -> {el, player, state}

    function makeTile(id) {
      const el = template.content.firstElementChild.cloneNode(true);
      el.dataset.stream = id;
      const href = `/streams/${encodeURIComponent(id)}`;
      el.querySelector(".frame-link").href = href;
      const name = el.querySelector(".stream-id");
      name.href = href;
      name.textContent = id;
      el.querySelector(".remove").addEventListener("click", () => removeStream(id));
      grid.append(el);
      const img = el.querySelector("img.frame");
      const player = tiles.size < MAX_MJPEG_TILES ? playMjpeg(img, id) : playStills(img, id);
      const tile = { el, player, state: null };
      tiles.set(id, tile);
      return tile;
    }

    function updateTile(tile, stream) {
      const el = tile.el;
      if (tile.state !== null && tile.state !== "streaming" && stream.state === "streaming") {
        tile.player.restart(); // the stream is back: pick its frames up again at once
      }
      tile.state = stream.state;
      setState(el.querySelector(".state"), stream.state);
      el.querySelector(".fps").textContent = formatFps(stream.fps);
      const frames = el.querySelector(".frames");
      frames.textContent = String(stream.frames);
      frames.dataset.value = String(stream.frames);
      el.querySelector(".dropped").textContent = String(stream.dropped);
      el.querySelector(".latency").textContent = formatLatency(stream.latency_ms);
      const targets = stream.targets || [];
      el.querySelector(".targets").textContent = targets.length ? targets.join(", ") : "none";
      el.querySelector(".error").textContent = stream.error || "";
    }

    function render(streams) {
      const seen = new Set();
      for (const stream of streams) {
        seen.add(stream.id);
        updateTile(tiles.get(stream.id) || makeTile(stream.id), stream);
      }
      for (const [id, tile] of tiles) {
        if (!seen.has(id)) {
          tile.player.stop();
          tile.el.remove();
          tiles.delete(id);
        }
      }
      $("empty").hidden = streams.length > 0;
      const streaming = streams.filter((s) => s.state === "streaming").length;
      $("summary").textContent = `${streams.length} stream${streams.length === 1 ? "" : "s"}, ${streaming} streaming`;
    }

    async function poll() {
      try {
        render(await api("/api/streams"));
        if ($("message").classList.contains("is-error")) setMessage("");
      } catch (error) {
        setMessage(`cannot list the streams: ${error.message}`, true);
      } finally {
        setTimeout(poll, POLL_MS);
      }
    }

    async function removeStream(id) {
      if (!window.confirm(`Remove stream ${id}? Its outputs are finalised.`)) return;
      try {
        await api(streamPath(id), { method: "DELETE" });
        setMessage(`removed ${id}`);
      } catch (error) {
        setMessage(`cannot remove ${id}: ${error.message}`, true);
      }
    }

    $("add-stream").addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = event.currentTarget;
      const body = { path: form.elements.path.value.trim() };
      const id = form.elements.id.value.trim();
      if (id) body.id = id;
      try {
        const added = await api("/api/streams", { method: "POST", body });
        setMessage(`added ${added.id}`);
        form.reset();
      } catch (error) {
        setMessage(`cannot add the stream: ${error.message}`, true);
      }
    });

    poll();
  }

  // ---- one stream, large: click or drag to set targets ----

  function streamPage() {
    const id = decodeURIComponent(location.pathname.replace(/^\/streams\//, "").replace(/\/+$/, ""));
    const img = $("frame");
    const view = $("view");
    const dragBox = $("drag-box");
    let shownTargets = null; // the ids listed, as a string, to redraw the list only when it changes
    let gone = false;
    // What the page last heard, for whoever looks (the browser tests, a curious user's console).
    const viewer = { stream: id, last: null };
    window.fastsamViewer = viewer;

    document.title = `${id} · fastsam-stream`;
    $("stream-id").textContent = id;
    playMjpeg(img, id);

    function showTargets(ids) {
      const key = ids.join(",");
      if (key === shownTargets) return;
      shownTargets = key;
      const list = $("targets");
      list.replaceChildren();
      for (const target of ids) {
        const item = document.createElement("li");
        item.dataset.target = String(target);
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = targetColour(target);
        const label = document.createElement("span");
        label.textContent = `target ${target}`;
        const drop = document.createElement("button");
        drop.type = "button";
        drop.className = "drop";
        drop.textContent = "Drop";
        drop.title = `stop following ${target}`;
        drop.addEventListener("click", () => command({ op: "drop", ids: [target] }));
        item.append(swatch, label, drop);
        list.append(item);
      }
      $("no-targets").hidden = ids.length > 0;
      $("drop-all").disabled = ids.length === 0;
    }

    function addEvent(update) {
      const parts = [update.event];
      if (update.added) parts.push(`added ${update.added.join(", ")}`);
      if (update.dropped) parts.push(`dropped ${update.dropped.join(", ")}`);
      if (update.width && update.height) parts.push(`${update.width}x${update.height}`);
      if (update.message) parts.push(update.message);
      const item = document.createElement("li");
      item.className = `event event-${update.event}`;
      const when = typeof update.at === "number" ? new Date(update.at * 1000).toLocaleTimeString() : "";
      item.textContent = `${when} frame ${update.frame}: ${parts.join(" · ")}`;
      const list = $("events");
      list.prepend(item);
      while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
    }

    async function command(body) {
      try {
        const answer = await api(`${streamPath(id)}/commands`, { method: "POST", body });
        setMessage(answer && answer.queued ? answer.queued : "queued");
      } catch (error) {
        setMessage(`not sent: ${error.message}`, true);
      }
    }

    async function poll() {
      try {
        const stream = await api(streamPath(id));
        setState($("state"), stream.state);
        $("fps").textContent = formatFps(stream.fps);
        $("dropped").textContent = String(stream.dropped);
        $("latency").textContent = formatLatency(stream.latency_ms);
        if (stream.state !== "streaming") showTargets(stream.targets || []); // no frames to say so
        if (stream.error) setMessage(stream.error, true);
      } catch (error) {
        if (error.status === 404) {
          gone = true;
          setState($("state"), "removed");
          setMessage(`no stream ${id} (any more): see all streams`, true);
          return;
        }
        setMessage(`cannot read the stream's state: ${error.message}`, true);
      }
      setTimeout(poll, POLL_MS);
    }

    function connect() {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const socket = new WebSocket(`${scheme}//${location.host}${streamPath(id)}/ws`);
      socket.onmessage = (message) => {
        let update;
        try {
          update = JSON.parse(message.data);
        } catch (_) {
          return;
        }
        if (update.event) {
          addEvent(update);
          return;
        }
        viewer.last = update;
        const counter = $("frame-number");
        counter.dataset.value = String(update.frame);
        counter.textContent = String(update.frame);
        $("tracks").textContent = String((update.tracks || []).length);
        showTargets(update.targets || []);
      };
      socket.onclose = () => {
        if (!gone) setTimeout(connect, RETRY_MS);
      };
    }

    // Where a point on the screen falls in the source frame, in its own pixels, whatever size the
    // frame is shown at (the picture is scaled to fit its box, centred: object-fit contain).
    function toSource(clientX, clientY) {
      const width = img.naturalWidth;
      const height = img.naturalHeight;
      if (!width || !height) return null;
      const rect = img.getBoundingClientRect();
      const scale = Math.min(rect.width / width, rect.height / height);
      const left = rect.left + (rect.width - width * scale) / 2;
      const top = rect.top + (rect.height - height * scale) / 2;
      const x = (clientX - left) / scale;
      const y = (clientY - top) / scale;
      const inside = x >= 0 && y >= 0 && x < width && y < height;
      const round = (v, max) => Math.round(Math.min(Math.max(v, 0), max) * 10) / 10;
      return { x: round(x, width), y: round(y, height), inside };
    }

    let press = null; // {x, y, pointerId, dragging} while the button is down

    function showDrag(event) {
      const rect = view.getBoundingClientRect();
      const x1 = Math.min(press.x, event.clientX) - rect.left;
      const y1 = Math.min(press.y, event.clientY) - rect.top;
      dragBox.style.left = `${x1}px`;
      dragBox.style.top = `${y1}px`;
      dragBox.style.width = `${Math.abs(event.clientX - press.x)}px`;
      dragBox.style.height = `${Math.abs(event.clientY - press.y)}px`;
      dragBox.hidden = false;
    }

    view.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      event.preventDefault();
      press = { x: event.clientX, y: event.clientY, dragging: false };
      view.setPointerCapture(event.pointerId);
    });
    view.addEventListener("pointermove", (event) => {
      if (!press) return;
      if (Math.hypot(event.clientX - press.x, event.clientY - press.y) > DRAG_PX) press.dragging = true;
      if (press.dragging) showDrag(event);
    });
    view.addEventListener("pointercancel", () => {
      press = null;
      dragBox.hidden = true;
    });
    view.addEventListener("pointerup", (event) => {
      if (!press) return;
      const start = press;
      press = null;
      dragBox.hidden = true;
      const op = $("add-mode").checked ? "add" : "replace";
      const a = toSource(start.x, start.y);
      const b = toSource(event.clientX, event.clientY);
      if (!a || !b) {
        setMessage("no frame yet: wait for the picture", true);
        return;
      }
      if (!start.dragging) {
        if (a.inside) command({ op, points: [[a.x, a.y, 1]] });
        return;
      }
      const box = [Math.min(a.x, b.x), Math.min(a.y, b.y), Math.max(a.x, b.x), Math.max(a.y, b.y)];
      if (box[2] - box[0] < 1 || box[3] - box[1] < 1) {
        setMessage("that box is too thin: drag across the object", true);
        return;
      }
      command({ op, box });
    });
    $("drop-all").addEventListener("click", () => command({ op: "drop" }));

    showTargets([]);
    poll();
    connect();
  }

  // ---- sign in ----

  function loginPage() {
    $("login-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const token = event.currentTarget.elements.token.value;
      try {
        await api("/login", { method: "POST", body: { token } });
      } catch (error) {
        setMessage(error.status === 401 || error.status === 403 ? "wrong token" : error.message, true);
        return;
      }
      // Back where the viewer was sent from, on this site only.
      const next = new URLSearchParams(location.search).get("next") || "/";
      location.assign(/^\/(?![/\\])/.test(next) ? next : "/");
    });
  }

  const pages = { grid: gridPage, stream: streamPage, login: loginPage };
  const page = pages[document.body.dataset.page];
  if (page) page();
})();
