"""scripts/repro_parallel.py on a three-stage DVC pipeline of shell commands: order, core pinning, dvc.lock."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sml.settings import cores

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "repro_parallel.py"

PIPELINE = """\
stages:
  first:
    cmd: nproc > first.txt
    outs: [first.txt]
  left:
    cmd: cat first.txt > left.txt && nproc >> left.txt
    deps: [first.txt]
    outs: [left.txt]
  right:
    cmd: {right}
    deps: [first.txt]
    outs: [right.txt]
"""


def _repo(tmp_path: Path, right: str = "cat first.txt > right.txt && nproc >> right.txt") -> Path:
    if shutil.which("taskset") is None:
        pytest.skip("taskset (util-linux) is not installed")
    (tmp_path / "dvc.yaml").write_text(PIPELINE.format(right=right))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def _run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=repo, env=env, capture_output=True, text=True)


def test_stages_run_after_their_dependencies_pinned_and_recorded(tmp_path):
    repo = _repo(tmp_path)
    jobs = min(2, cores())
    result = _run(repo, "--jobs", str(jobs))
    assert result.returncode == 0, result.stdout + result.stderr
    # alone, the first stage gets every core it was given; the two after it share them, one core each
    assert (repo / "first.txt").read_text().split() == [str(jobs)]
    expected_after = "1" if jobs == 2 else str(jobs)
    assert (repo / "left.txt").read_text().split() == [str(jobs), expected_after]
    assert (repo / "right.txt").read_text().split() == [str(jobs), expected_after]
    times = (repo / "runs/repro/times.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in times][0] == "first" and len(times) == 3
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "-q"], cwd=repo)
    assert status.returncode == 0  # dvc.lock records all three: nothing is stale
    assert "up to date" in _run(repo, "--dry").stdout


def test_a_failed_stage_is_reported_and_left_stale(tmp_path):
    repo = _repo(tmp_path, right="exit 3")
    result = _run(repo, "--jobs", "1")
    assert result.returncode == 1
    assert "FAILED right" in result.stdout
    assert "right" in _run(repo, "--dry").stdout.split()  # still stale: it reruns next time


def test_jobs_beyond_the_cores_are_refused(tmp_path):
    result = _run(tmp_path, "--jobs", str(cores() + 1))
    assert result.returncode == 2 and "--jobs" in result.stderr
