#!/usr/bin/python3
"""A real RTSP server on 127.0.0.1 that serves a video file as H.264, for the test suite.

Runs under Debian's ``/usr/bin/python3`` (which has PyGObject and GstRtspServer; the project's
virtual environment does not). ``tests/rtsp.py`` starts it as a subprocess; it can also be run by
hand::

    /usr/bin/python3 tests/rtsp_server.py --file ../shared/media/videos/01_dog.mp4 \
        --port 8554 --width 320 --height 240 --loop

The clip is decoded, optionally scaled, re-encoded with x264 (zero latency, no B-frames, one slice
per frame, a key frame every ``--key-int`` frames, SPS/PPS in front of every key frame) and sent at
the clip's own frame rate (the RTSP media's sinks sync on the pipeline clock). With ``--loop`` the
clip repeats forever with continuous timestamps: the end-of-stream from the decoder is dropped, the
decoder is seeked back to the start, and the running time of the new pass is shifted to follow the
previous one (``Gst.Pad.set_offset``), so a client sees one endless stream. Without ``--loop`` the
stream ends with the clip (the client gets an RTCP BYE and its demuxer reports end of file).

One line ``READY rtsp://127.0.0.1:PORT/PATH`` is printed to stdout (flushed) once the server is
listening; with ``--port 0`` the system picks the port and the line says which. SIGTERM and SIGINT
stop it cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

HOST = "127.0.0.1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", required=True, type=Path, help="video file to serve")
    p.add_argument("--port", type=int, default=8554, help="TCP port on 127.0.0.1 (0: any free one)")
    p.add_argument("--path", default="/stream", help="mount path (default /stream)")
    p.add_argument("--width", type=int, help="scale to this width (with --height; default: native size)")
    p.add_argument("--height", type=int, help="scale to this height (with --width)")
    p.add_argument("--loop", action="store_true", help="repeat the clip forever")
    p.add_argument("--shared", action="store_true", help="one pipeline shared by all clients")
    p.add_argument("--key-int", type=int, default=10, help="frames between H.264 key frames (default 10)")
    args = p.parse_args(argv)
    if (args.width is None) != (args.height is None):
        p.error("--width and --height go together")
    for name in ("width", "height"):
        v = getattr(args, name)
        if v is not None and (v < 2 or v % 2):
            p.error(f"--{name} must be an even number >= 2 (H.264 4:2:0)")
    if not args.file.is_file():
        p.error(f"--file {args.file}: no such file")
    if not args.path.startswith("/"):
        args.path = "/" + args.path
    return args


def launch_line(file: Path, width: int | None, height: int | None, key_int: int) -> str:
    location = str(file.resolve()).replace("\\", "\\\\").replace('"', '\\"')
    caps = "video/x-raw,format=I420"
    if width is not None:
        # pixel-aspect-ratio=1/1: scale to exactly WxH instead of letting videoscale keep the
        # display aspect ratio through a non-square pixel aspect ratio
        caps += f",width={width},height={height},pixel-aspect-ratio=1/1"
    return (
        f'( filesrc location="{location}" ! decodebin ! videoconvert name=conv ! videoscale ! {caps} '
        # threads=1: one slice per frame, like a camera. With several slices (x264's sliced threads
        # under tune=zerolatency) and config-interval=-1 the payloader repeats SPS/PPS before
        # every slice of a key frame and FFmpeg's depacketizer splits that frame in two.
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={key_int} threads=1 "
        f"! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )


class Looper:
    """Makes one media's pipeline repeat its clip forever, on the sink pad of element ``conv``.

    Everything the decoder sends through that pad passes a probe: the EOS is dropped and a
    flushing seek to 0 goes back upstream (from the main loop, not the streaming thread); the
    flush it causes is dropped too (the encoder and payloader keep their state), and the pad's
    running-time offset grows by the length of each pass, so timestamps keep increasing.
    """

    def __init__(self, pad: Gst.Pad):
        self.pad = pad
        self.segment_start = 0
        self.pass_end = 0  # end of the current pass, in the decoder's stream time (ns)
        self.offset = 0
        self.seeking = False
        self.looping = True
        pad.add_probe(
            Gst.PadProbeType.BUFFER | Gst.PadProbeType.EVENT_DOWNSTREAM | Gst.PadProbeType.EVENT_FLUSH, self.probe
        )

    def probe(self, pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        if info.type & Gst.PadProbeType.BUFFER:
            buf = info.get_buffer()
            if buf.pts != Gst.CLOCK_TIME_NONE:
                end = buf.pts + (buf.duration if buf.duration != Gst.CLOCK_TIME_NONE else 0)
                self.pass_end = max(self.pass_end, end)
            return Gst.PadProbeReturn.OK
        event = info.get_event()
        if event is None:
            return Gst.PadProbeReturn.OK
        t = event.type
        if t == Gst.EventType.EOS and self.looping:
            if self.pass_end <= self.segment_start:  # nothing was decoded: do not spin
                return Gst.PadProbeReturn.OK
            self.offset += self.pass_end - self.segment_start
            self.pass_end = 0
            self.seeking = True
            GLib.idle_add(self.seek_to_start)
            return Gst.PadProbeReturn.DROP
        if t in (Gst.EventType.FLUSH_START, Gst.EventType.FLUSH_STOP) and self.seeking:
            return Gst.PadProbeReturn.DROP
        if t == Gst.EventType.SEGMENT:
            self.segment_start = event.parse_segment().start
            if self.seeking:
                self.seeking = False
                pad.set_offset(self.offset)
        return Gst.PadProbeReturn.OK

    def seek_to_start(self) -> bool:
        seek = Gst.Event.new_seek(
            1.0,
            Gst.Format.TIME,
            Gst.SeekFlags.FLUSH | Gst.SeekFlags.ACCURATE,
            Gst.SeekType.SET,
            0,
            Gst.SeekType.NONE,
            -1,
        )
        if not self.pad.push_event(seek):  # upstream, to decodebin
            # not seekable, or the media is being torn down: let the stream end instead of stalling
            print("rtsp_server: --loop: seek back to the start failed; ending the stream", file=sys.stderr, flush=True)
            self.seeking = False
            self.looping = False
            self.pad.send_event(Gst.Event.new_eos())
        return False  # one-shot idle callback


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Gst.init(None)
    if Gst.ElementFactory.find("x264enc") is None:
        print("rtsp_server: GStreamer element x264enc is missing (gstreamer1.0-plugins-ugly)", file=sys.stderr)
        return 2

    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.file, args.width, args.height, args.key_int))
    factory.set_shared(args.shared)
    # Not seekable, like a camera: FFmpeg's PLAY carries "Range: npt=0.000-", and on a seekable
    # shared media that seeks everyone's stream back to the start (timestamps jump back) when a
    # second client joins. gst-rtsp-server treats media with this clock mode as unseekable.
    factory.set_publish_clock_mode(GstRtspServer.RTSPPublishClockMode.CLOCK_AND_OFFSET)
    # a new client after the last one left gets a fresh pipeline (clip from the start)
    factory.set_eos_shutdown(False)
    if args.loop:

        def configure(_factory, media):
            # the probe keeps the Looper alive as long as the pad (the media's pipeline)
            Looper(media.get_element().get_by_name("conv").get_static_pad("sink"))

        factory.connect("media-configure", configure)
    server.get_mount_points().add_factory(args.path, factory)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on {HOST}:{args.port}", file=sys.stderr, flush=True)
        return 1
    port = server.get_bound_port()

    def stop() -> bool:
        loop.quit()
        return False

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, stop)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, stop)
    print(f"READY rtsp://{HOST}:{port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
