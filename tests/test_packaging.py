"""The built wheel, installed into a clean environment, provides exactly one import name,
`fastsam_stream`, and runs, even beside other packages called `trackers`, `pipeline` or `sources`."""

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


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy: an in-tree build/ folder left from an earlier build could carry stale modules.
    tree = tmp_path_factory.mktemp("tree") / "fastsam-stream"
    shutil.copytree(REPO, tree, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "runs", "__pycache__", ".pytest_cache"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(tree)],
        check=True, capture_output=True, text=True,
    )
    (built,) = out.glob("fastsam_stream-*.whl")
    return built


def test_wheel_holds_only_the_fastsam_stream_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"fastsam_stream", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    for sub in ("pipeline", "trackers", "sources", "sinks", "evaluation"):
        assert f"fastsam_stream/{sub}/__init__.py" in names
    assert "fastsam_stream/configs/default.yaml" in names
    assert {"fastsam_stream/configs/trackers/bytetrack.yaml", "fastsam_stream/configs/trackers/iou.yaml"} <= set(names)
    assert not any(n.startswith("fastsam_stream/tests/") for n in names)


@pytest.fixture(scope="module")
def clean_env(wheel, tmp_path_factory) -> dict:
    """A new venv with only our wheel installed; the dependencies (torch, ultralytics, ...) come
    from this environment's site-packages through a .pth line, without its editable install."""
    root = tmp_path_factory.mktemp("clean")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, text=True)
    # Packages that share our sub-packages' names: if any of our code imported them top-level,
    # it would get these, and they refuse to be imported.
    shadows = root / "others"
    for name in ("trackers", "pipeline", "sources", "sinks"):
        (shadows / name).mkdir(parents=True)
        (shadows / name / "__init__.py").write_text(f"raise ImportError('the other {name} package was imported')\n")
    env = {**os.environ, "PYTHONPATH": str(shadows)}
    # run from an empty folder: the checkout (and its build metadata) must not be on the path
    return {"python": str(python), "script": str(venv / "bin" / "fastsam-stream"), "site": site, "env": env,
            "cwd": str(root)}


def test_installed_distribution_has_one_top_level_name(clean_env):
    code = (
        "import importlib.metadata as m, json;"
        "files = m.distribution('fastsam-stream').files;"
        "print(json.dumps(sorted({f.parts[0] for f in files if not f.parts[0].endswith('.dist-info')"
        " and f.parts[0] != '..'})))"
    )
    done = subprocess.run([clean_env["python"], "-c", code], capture_output=True, text=True, env=clean_env["env"],
                          cwd=clean_env["cwd"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '["fastsam_stream"]'


def test_the_wheel_imports_from_its_install_and_runs_beside_same_named_packages(clean_env, weights, videos, tmp_path):
    code = "import fastsam_stream, fastsam_stream.trackers, fastsam_stream.pipeline; print(fastsam_stream.__file__)"
    done = subprocess.run([clean_env["python"], "-c", code], capture_output=True, text=True, env=clean_env["env"],
                          cwd=clean_env["cwd"])
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(clean_env["site"])  # the wheel, not the checkout
    run = subprocess.run(
        [clean_env["script"], "run", str(videos / "carphone_pristine.mp4"), "--weights", str(weights),
         "--device", "cpu", "--imgsz", "320", "--box", "28,16,176,143", "--out", str(tmp_path), "--quiet",
         "--tracker", "iou"],  # a bundled tracker config, read from the installed package
        capture_output=True, text=True, env=clean_env["env"], cwd=clean_env["cwd"], timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert len((tmp_path / "tracks.jsonl").read_text().splitlines()) == 120
    assert (tmp_path / "annotated.mp4").stat().st_size > 0
