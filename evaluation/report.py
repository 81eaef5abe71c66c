"""What an evaluation leaves behind: report.json, one PNG plot, and the table printed at the end.

Plots use matplotlib's object-oriented API on the Agg canvas, never pyplot, so no global
backend is switched and nothing needs a display.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError


def plain(value: object) -> object:
    """JSON-ready: numpy scalars and arrays to Python, NaN and infinities to None (strict JSON has neither)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(value: object, level: int = 0) -> str:
    """Indented JSON whose lists of numbers (per-frame scores, boxes) stay on one line each."""
    pad = " " * level
    if isinstance(value, dict) and value:
        items = [f"{pad} {json.dumps(k)}: {to_json(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        return "[\n" + ",\n".join(f"{pad} {to_json(v, level + 1)}" for v in value) + f"\n{pad}]"
    return json.dumps(value, separators=(", ", ": "))


def write_report(path: Path, report: Mapping[str, object]) -> None:
    """Write `report` as strict JSON (numpy values made plain, NaN as null) to `path`.

    Args:
        path: The report.json to write.
        report: The evaluation's settings and scores.

    Raises:
        OutputError: The file cannot be written.
    """
    try:
        path.write_text(to_json(plain(report)) + "\n", encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> None:
    try:
        figure.savefig(path, format="png", bbox_inches="tight")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def plot_bars(path: Path, title: str, names: Sequence[str], series: Mapping[str, Sequence[float]]) -> None:
    """Grouped bars: one group per sequence, one bar per metric (values in [0, 1], NaN drawn as 0)."""
    figure = _figure(max(6.0, 1.1 * len(names) + 2), 4.0)
    axes = figure.add_subplot()
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(names))
    for i, (label, values) in enumerate(series.items()):
        axes.bar(x + (i - (len(series) - 1) / 2) * width, np.nan_to_num(np.asarray(values, float)), width, label=label)
    axes.set_xticks(x, list(names), rotation=30, ha="right")
    axes.set_ylim(min(0.0, float(np.nanmin([min(v, default=0) for v in series.values()]))), 1.0)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="lower right")
    _save(figure, path)


def plot_success(
    path: Path,
    title: str,
    thresholds: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    aucs: Mapping[str, float],
) -> None:
    """OTB success plots (share of frames with IoU > t against t), AUC in the legend, plus AUC bars."""
    figure = _figure(11.0, 4.0)
    left, right = figure.subplots(1, 2, width_ratios=[3, 2])
    for name, curve in curves.items():
        left.plot(thresholds, curve, label=f"{name} [{aucs[name]:.3f}]")
    left.set(xlabel="overlap threshold", ylabel="success rate", xlim=(0, 1), ylim=(0, 1.02), title=title)
    left.grid(alpha=0.3)
    left.legend(loc="lower left", fontsize="small")
    names = list(aucs)
    right.bar(np.arange(len(names)), [aucs[n] for n in names], color="tab:blue")
    right.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    right.set(ylim=(0, 1), title="success AUC per target")
    right.grid(axis="y", alpha=0.3)
    _save(figure, path)


def _cell(value: object, width: int) -> str:
    if isinstance(value, float):
        return ("-" if not math.isfinite(value) else f"{value:.3f}").rjust(width)
    if value is None:
        return "-".rjust(width)
    return str(value).rjust(width)


def table(
    columns: Sequence[str], rows: Mapping[str, Mapping[str, object]], keys: Sequence[str] | None = None
) -> list[str]:
    """A plain text table: one row per name, the given columns (`keys` picks each column's field, one per column)."""
    keys = list(keys or columns)
    first = max([len("sequence"), *(len(n) for n in rows)])
    widths = [max(len(c), 8) for c in columns]
    lines = ["sequence".ljust(first) + "".join(" " + c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    for name, row in rows.items():
        lines.append(name.ljust(first) + "".join(" " + _cell(row.get(k), w) for k, w in zip(keys, widths, strict=True)))
    return lines


def _fps(row: Mapping[str, object]) -> str:
    fps = row.get("fps")
    return "-" if fps is None else f"{fps:.1f}"


def finish(report: Mapping[str, object], out: Path) -> list[str]:
    """Write report.json and <kind>.png under `out`; return the table and the mean line to print."""
    kind = report["kind"]
    written = [out / "report.json", out / f"{kind}.png"]
    write_report(written[0], report)
    if kind == "davis":
        lines = _davis(report, written[1])
    elif kind == "sot":
        lines = _sot(report, written[1])
    else:
        lines = _mot(report, written[1])
    return lines[:-1] + [f"{lines[-1]} -> {', '.join(str(p) for p in written)}"]


def _davis(report: Mapping[str, Any], png: Path) -> list[str]:
    seqs, mean = report["sequences"], report["mean"]
    plot_bars(
        png,
        f"DAVIS, {report['settings']['prompt']} prompt: J, F, J&F per sequence",
        list(seqs),
        {k: [s[k] for s in seqs.values()] for k in ("J", "F", "J&F")},
    )
    rows = {name: {**s, "fps": _fps(s)} for name, s in seqs.items()}
    lines = table(["frames", "found", "J", "F", "J&F", "frames/s"], rows, ["frames", "found", "J", "F", "J&F", "fps"])
    return lines + [
        f"mean over {len(seqs)} sequences: J&F {mean['J&F']:.3f}, J {mean['J']:.3f}, F {mean['F']:.3f}, "
        f"{_fps(mean)} frames/s"
    ]


def _sot(report: Mapping[str, Any], png: Path) -> list[str]:
    targets, mean = report["targets"], report["mean"]
    from .metrics import SUCCESS_THRESHOLDS

    plot_success(
        png,
        "OTB success plot (OPE)",
        SUCCESS_THRESHOLDS.tolist(),
        {n: t["success_curve"] for n, t in targets.items()},
        {n: t["AUC"] for n, t in targets.items()},
    )
    rows = {name: {**t, "fps": _fps(t)} for name, t in targets.items()}
    lines = table(
        ["frames", "tracked", "AUC", "prec@20px", "frames/s"],
        rows,
        ["frames", "tracked", "AUC", "precision@20px", "fps"],
    )
    return lines + [
        f"mean over {len(targets)} targets: success AUC {mean['AUC']:.3f}, "
        f"precision@20px {mean['precision@20px']:.3f}, {_fps(mean)} frames/s"
    ]


def _mot(report: Mapping[str, Any], png: Path) -> list[str]:
    seqs, combined = report["sequences"], report["combined"]
    plot_bars(
        png,
        "MOTChallenge: HOTA, IDF1, MOTA per sequence",
        list(seqs),
        {k: [s[k] for s in seqs.values()] for k in ("HOTA", "IDF1", "MOTA")},
    )
    columns = ["frames", "HOTA", "IDF1", "MOTA", "IDSW", "FP", "FN", "frames/s"]
    rows = {name: {**s, "fps": _fps(s)} for name, s in {**seqs, "COMBINED": combined}.items()}
    for row in rows.values():
        row.update({k: int(row[k]) for k in ("IDSW", "FP", "FN")})
    lines = table(columns, rows, ["frames", "HOTA", "IDF1", "MOTA", "IDSW", "FP", "FN", "fps"])
    return lines + [
        f"combined over {len(seqs)} sequences (TrackEval): HOTA {combined['HOTA']:.3f}, "
        f"IDF1 {combined['IDF1']:.3f}, MOTA {combined['MOTA']:.3f}, {_fps(combined)} frames/s"
    ]
