"""The built wheel, installed into a clean environment, provides exactly one import name.

That name is `fastsam_stream`, and it runs, even beside other packages called `trackers`,
`pipeline` or `sources`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Every module the wheel ships. A new module is added here on purpose; anything else in the wheel
# (a debug script left at the root, which is the package) fails the test.
MODULES = sorted(
    """
fastsam_stream
fastsam_stream.__main__
fastsam_stream.alerts
fastsam_stream.alerts.mqtt
fastsam_stream.alerts.queue
fastsam_stream.alerts.settings
fastsam_stream.alerts.webhook
fastsam_stream.assemble
fastsam_stream.cli
fastsam_stream.cluster
fastsam_stream.cluster.build
fastsam_stream.cluster.connect
fastsam_stream.cluster.driver
fastsam_stream.cluster.home
fastsam_stream.cluster.places
fastsam_stream.cluster.records
fastsam_stream.cluster.resume
fastsam_stream.cluster.settings
fastsam_stream.cluster.worker
fastsam_stream.commands
fastsam_stream.config
fastsam_stream.core
fastsam_stream.defaults_yaml
fastsam_stream.errors
fastsam_stream.options
fastsam_stream.settings
fastsam_stream.evaluation
fastsam_stream.evaluation.cli
fastsam_stream.evaluation.datasets
fastsam_stream.evaluation.metrics
fastsam_stream.evaluation.report
fastsam_stream.evaluation.runner
fastsam_stream.pipeline
fastsam_stream.pipeline.batch_probe
fastsam_stream.pipeline.batcher
fastsam_stream.pipeline.clip
fastsam_stream.pipeline.clip_settings
fastsam_stream.pipeline.control
fastsam_stream.pipeline.engines
fastsam_stream.pipeline.intake
fastsam_stream.pipeline.lane
fastsam_stream.pipeline.lazy_torch
fastsam_stream.pipeline.embeddings
fastsam_stream.pipeline.masks
fastsam_stream.pipeline.openvino_engine
fastsam_stream.pipeline.places
fastsam_stream.pipeline.prompts
fastsam_stream.pipeline.export
fastsam_stream.pipeline.quantize
fastsam_stream.pipeline.runner
fastsam_stream.pipeline.segmenter
fastsam_stream.pipeline.status
fastsam_stream.pipeline.summary
fastsam_stream.service
fastsam_stream.service.app
fastsam_stream.service.core
fastsam_stream.service.frames
fastsam_stream.service.metrics
fastsam_stream.service.security
fastsam_stream.service.server
fastsam_stream.sinks
fastsam_stream.sinks.base
fastsam_stream.sinks.draw
fastsam_stream.sinks.jsonl
fastsam_stream.sinks.lines
fastsam_stream.sinks.mot
fastsam_stream.sinks.rotating
fastsam_stream.sinks.snapshots
fastsam_stream.sinks.video
fastsam_stream.sources
fastsam_stream.sources.base
fastsam_stream.sources.file
fastsam_stream.sources.http_ranges
fastsam_stream.sources.images
fastsam_stream.sources.mp4
fastsam_stream.sources.folder
fastsam_stream.sources.live
fastsam_stream.sources.redact
fastsam_stream.trackers
fastsam_stream.trackers.appearance
fastsam_stream.trackers.base
fastsam_stream.trackers.camera_motion
fastsam_stream.trackers.gallery
fastsam_stream.trackers.iou_tracker
fastsam_stream.trackers.kalman
fastsam_stream.trackers.lifecycle
fastsam_stream.trackers.matching
fastsam_stream.trackers.registry
fastsam_stream.trackers.bytetrack
fastsam_stream.trackers.bytetrack.association
fastsam_stream.trackers.bytetrack.looks
fastsam_stream.trackers.bytetrack.parts
fastsam_stream.trackers.bytetrack.reacquire
fastsam_stream.trackers.bytetrack.settings
fastsam_stream.trackers.bytetrack.targets
fastsam_stream.trackers.bytetrack.track
fastsam_stream.zones
fastsam_stream.zones.geometry
fastsam_stream.zones.monitor
fastsam_stream.zones.settings
fastsam_stream.trackers.bytetrack.tracker
""".split()
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy: an in-tree build/ folder left from an earlier build could carry stale modules.
    tree = tmp_path_factory.mktemp("tree") / "fastsam-stream"
    shutil.copytree(
        REPO,
        tree,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "runs", "__pycache__", ".pytest_cache"
        ),
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(tree)],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = out.glob("fastsam_stream-*.whl")
    return built


def test_wheel_holds_only_the_fastsam_stream_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"fastsam_stream", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    for sub in ("pipeline", "trackers", "sources", "sinks", "evaluation", "service"):
        assert f"fastsam_stream/{sub}/__init__.py" in names
    assert "fastsam_stream/configs/default.yaml" in names
    # the viewer ships as package data: it works offline, with no build step
    viewer = {
        f"fastsam_stream/service/static/{n}"
        for n in ("index.html", "stream.html", "login.html", "viewer.js", "viewer.css")
    }
    assert viewer <= set(names)
    assert {"fastsam_stream/configs/trackers/bytetrack.yaml", "fastsam_stream/configs/trackers/iou.yaml"} <= set(names)
    assert not any(n.startswith("fastsam_stream/tests/") for n in names)


def test_wheel_holds_exactly_the_listed_modules(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(
        n.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for n in names if n.endswith(".py")
    )
    assert shipped == MODULES


def test_every_module_imports_and_leaves_the_process_alive(clean_env):
    """Importing a module must not do anything to the importing process (a timer, a signal, an exit).

    Each one is imported in a fresh interpreter that then has to stay alive for a few seconds.
    """
    code = (
        "import importlib, sys, time\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "time.sleep(3)\n"
        "print('alive')\n"
    )
    done = subprocess.run(
        [clean_env["python"], "-c", code, *MODULES],
        capture_output=True,
        text=True,
        env=clean_env["env"],
        cwd=clean_env["cwd"],
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "alive"


@pytest.fixture(scope="module")
def clean_env(wheel, tmp_path_factory) -> dict:
    """A new venv with only our wheel installed.

    The dependencies (torch, ultralytics, ...) come from this environment's site-packages through
    a .pth line, without its editable install.
    """
    root = tmp_path_factory.mktemp("clean")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    # Packages that share our sub-packages' names: if any of our code imported them top-level,
    # it would get these, and they refuse to be imported.
    shadows = root / "others"
    for name in ("trackers", "pipeline", "sources", "sinks"):
        (shadows / name).mkdir(parents=True)
        (shadows / name / "__init__.py").write_text(f"raise ImportError('the other {name} package was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(shadows)}
    # run from an empty folder: the checkout (and its build metadata) must not be on the path
    return {
        "python": str(python),
        "script": str(venv / "bin" / "fastsam-stream"),
        "site": site,
        "env": env,
        "cwd": str(root),
    }


def test_installed_distribution_has_one_top_level_name(clean_env):
    code = (
        "import importlib.metadata as m, json;"
        "files = m.distribution('fastsam-stream').files;"
        "print(json.dumps(sorted({f.parts[0] for f in files if not f.parts[0].endswith('.dist-info')"
        " and f.parts[0] != '..'})))"
    )
    done = subprocess.run(
        [clean_env["python"], "-c", code], capture_output=True, text=True, env=clean_env["env"], cwd=clean_env["cwd"]
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '["fastsam_stream"]'


def test_the_wheel_imports_from_its_install_and_runs_beside_same_named_packages(clean_env, weights, videos, tmp_path):
    code = "import fastsam_stream, fastsam_stream.trackers, fastsam_stream.pipeline; print(fastsam_stream.__file__)"
    done = subprocess.run(
        [clean_env["python"], "-c", code], capture_output=True, text=True, env=clean_env["env"], cwd=clean_env["cwd"]
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(clean_env["site"])  # the wheel, not the checkout
    run = subprocess.run(
        [
            clean_env["script"],
            "run",
            str(videos / "carphone_pristine.mp4"),
            "--weights",
            str(weights),
            "--device",
            "cpu",
            "--imgsz",
            "320",
            "--box",
            "28,16,176,143",
            "--out",
            str(tmp_path),
            "--quiet",
            "--tracker",
            "iou",
        ],  # a bundled tracker config, read from the installed package
        capture_output=True,
        text=True,
        env=clean_env["env"],
        cwd=clean_env["cwd"],
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert len((tmp_path / "tracks.jsonl").read_text().splitlines()) == 120
    assert (tmp_path / "annotated.mp4").stat().st_size > 0
