"""pyproject.toml is the single source of dependencies; environment.yml must carry the same pins."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pins = project["dependencies"] + [d for name, extra in extras.items() if name != "vllm" for d in extra]
    pins = {re.split("==", p)[0].lower(): p for p in pins}
    assert all("==" in p for p in pins.values()), "every dependency is pinned exactly"
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = {p.split("==")[0].lower(): p for p in pip if "==" in p}
    assert conda_pins == pins
    assert pins["torch"] == "torch==2.13.0"
    # the GPU-only extra is not part of the conda environment, but its pin is named there for GPU machines
    assert all(f"pip install -e '.[vllm]' ({p})" in (REPO / "environment.yml").read_text() for p in extras["vllm"])
