"""Plumbing: notebooks are clean sources, the DVC stages match params.yaml and the notebooks'
parameters, and the whole notebook chain runs end to end with its smoke defaults."""

import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest
import yaml

from sml import transcripts

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def parameters_of(path):
    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    return set(re.findall(r"^(\w+)\s*=", cell.source, re.MULTILINE))


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS][:1] == ["01_tasks.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_source_notebooks_carry_no_outputs(path):
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs (nbstripout)"


def test_stages_pass_only_known_parameters_and_declared_params():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in dvc["stages"].items():
        cmd = stage["cmd"]
        assert cmd.startswith("PYTHONPATH=src "), f"stage {name}: prefix cmd with PYTHONPATH=src"
        notebook = REPO / re.search(r"papermill (\S+\.ipynb)", cmd).group(1)
        assert str(notebook.relative_to(REPO)) in stage["deps"], f"stage {name}: its notebook must be a dep"
        passed = set(re.findall(r"-p (\w+) ", cmd))
        for inline in re.findall(r'-y "\{([^}]*)\}"', cmd):  # YAML-typed values (booleans)
            passed |= {item.split(":")[0].strip() for item in inline.split(",")}
        assert passed <= parameters_of(notebook), f"stage {name}: passes unknown parameters"
        for section, key in re.findall(r"\$\{(\w+)\.(\w+)\}", cmd):
            assert key in params[section], f"stage {name}: params.yaml lacks {section}.{key}"
            assert section in stage.get("params", []), f"stage {name}: declare params section {section}"


def test_notebook_chain_runs_end_to_end(tmp_path):
    """Every notebook, in order, with its smoke defaults, writing under a temporary out_root."""
    for path in NOTEBOOKS:
        papermill.execute_notebook(str(path), str(tmp_path / path.name), parameters={"out_root": str(tmp_path)},
                                   cwd=str(REPO), progress_bar=False, kernel_name="python3")
    counts = json.loads((tmp_path / "metrics" / "tasks.json").read_text())
    assert counts["toy_math"]["train"] > 0 and counts["toy_code"]["eval"] > 0
    assert counts["toy_code"]["reference_pass_rate"] == 1.0
    assert (tmp_path / "data" / "tasks" / "toy_math" / "dataset_dict.json").exists()
    assert (tmp_path / "reports" / "figures" / "01_tasks.png").stat().st_size > 10_000
    assert (tmp_path / "models" / "base_student" / "config.json").exists()
    assert {"parameters", "final_loss", "sr1_math", "sr1_code"} <= set(json.loads(
        (tmp_path / "metrics" / "base_student.json").read_text()))
    results = pd.read_csv(tmp_path / "metrics" / "eval.csv")
    assert list(results.columns) == transcripts.EVAL_COLUMNS
    assert set(results["condition"]) == {"base"} and set(results["eval_domain"]) == {"math", "code"}
    for _, cell in results.groupby(["eval_domain", "variant", "seed"]):
        assert cell["success"].is_monotonic_increasing and list(cell["turn"]) == list(range(1, len(cell) + 1))
    behaviour = pd.read_csv(tmp_path / "metrics" / "behaviour.csv")
    assert list(behaviour.columns) == transcripts.BEHAVIOUR_COLUMNS and len(behaviour) == 4
    assert (tmp_path / "data" / "transcripts" / "base" / "math_full_s0").exists()
    assert (tmp_path / "reports" / "figures" / "03_baseline.png").stat().st_size > 10_000
