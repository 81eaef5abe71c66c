"""Ray is optional: a run without `--ray` never imports it (the [ray] extra may be missing)."""

from __future__ import annotations

import subprocess
import sys

HANG_S = 300.0


def test_a_run_without_ray_never_imports_it(weights, videos, tmp_path):
    """The real command in one process, to its end: Ray (installed with [test]) is not in sys.modules after it."""
    script = (
        "import sys\n"
        "from fastsam_stream.cli import main\n"
        f"code = main(['run', {str(videos / 'tree.avi')!r}, '--weights', {str(weights)!r}, '--imgsz', '160',"
        f" '--no-video', '--out', {str(tmp_path / 'out')!r}, '--quiet'])\n"
        "print('exit', code, 'ray imported:', 'ray' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 0, done.stderr
    assert "exit 0 ray imported: False" in done.stdout, done.stdout + done.stderr
    assert (tmp_path / "out" / "tracks.jsonl").exists()
