"""The base_student stage builds the embedded student only when it is the pipeline's student; under a real
profile (any other ``student.model``) it builds nothing and writes only its declared outputs, saying so."""

import json
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

from sml.train import pretrain

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("student, builds", [
    ("models/base_student", True), ("./models/base_student/", True), ("models\\base_student", True),
    ("Qwen/Qwen2.5-7B-Instruct", False), ("/abs/models/base_student", False), ("models/other_student", False),
    ("base_student", False)])
def test_only_the_embedded_student_is_built(student, builds):
    assert pretrain.builds_embedded(student) is builds


def declared_outputs():
    """Every path the DVC stage base_student declares (outs and metrics)."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["base_student"]
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in stage["outs"] + stage["metrics"]]


def test_the_skipped_outputs_say_why(tmp_path):
    metrics = pretrain.write_skipped(tmp_path, "Qwen/Qwen2.5-7B-Instruct")
    assert json.loads((tmp_path / "metrics" / "base_student.json").read_text()) == metrics
    assert metrics["skipped"] is True and "'Qwen/Qwen2.5-7B-Instruct'" in metrics["reason"]
    assert not [k for k in metrics if k.startswith(("sr1_", "well_formed_"))]  # nothing calibrated, nothing claimed
    assert "Not built" in (tmp_path / "models" / "base_student" / "SKIPPED.md").read_text()


@pytest.mark.slow
def test_the_notebook_under_another_student_writes_every_declared_output_and_builds_nothing(tmp_path):
    """The stage's notebook with a hub student: no task set is there (it is never read), no model is built, and
    every output dvc.yaml declares exists, so DVC is satisfied."""
    executed = tmp_path / "reports" / "notebooks" / "02_base_student.ipynb"
    executed.parent.mkdir(parents=True)
    profile = tmp_path / "hub.yaml"  # the smoke sizes, a hub student
    profile.write_text((REPO / "profiles" / "smoke.yaml").read_text() + "student.model: Qwen/Qwen2.5-7B-Instruct\n")
    papermill.execute_notebook(str(REPO / "notebooks" / "02_base_student.ipynb"), str(executed),
                               parameters={"out_root": str(tmp_path), "settings_file": str(profile)},
                               cwd=str(REPO), progress_bar=False, kernel_name="python3")
    for path in declared_outputs():
        assert (tmp_path / path).exists(), f"base_student declares {path}, which the skipped notebook did not write"
    assert not (tmp_path / "models" / "base_student" / "config.json").exists()
    assert json.loads((tmp_path / "metrics" / "base_student.json").read_text())["skipped"] is True
    said = "".join(o.get("text", "") for c in nbformat.read(executed, as_version=4).cells for o in c.get("outputs", []))
    assert "Not built: student.model is 'Qwen/Qwen2.5-7B-Instruct', not the embedded 'models/base_student'" in said
    assert not (tmp_path / ".sml_work" / "02_base_student").exists()  # no work left behind
