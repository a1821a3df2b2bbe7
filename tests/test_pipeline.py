"""Plumbing: notebooks are clean sources, the DVC stages match params.yaml and the notebooks'
parameters, and the whole notebook chain runs end to end with its smoke defaults."""

import hashlib
import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest
import yaml

from sml import collect, transcripts

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TRAINED = ("sml_offline", "st_sft", "sml_online", "st_rl")  # the conditions the smoke chain trains and evaluates


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


def test_dvc_lock_holds_the_notebooks_as_committed():
    """A clone gets the notebooks as git stores them (nbstripout's form): dvc.lock must hash those bytes,
    or every stage looks changed in a fresh clone. Run `nbstripout notebooks/*.ipynb` before `dvc repro`."""
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    hashes = {dep["path"]: dep["md5"] for stage in lock["stages"].values() for dep in stage.get("deps", [])
              if dep["path"].startswith("notebooks/")}
    assert hashes, "dvc.lock lists no notebook"
    for path, md5 in hashes.items():
        assert hashlib.md5((REPO / path).read_bytes()).hexdigest() == md5, f"{path}: dvc.lock is stale for it"


def declared(entry):
    return entry if isinstance(entry, str) else next(iter(entry))


def test_stages_pass_only_known_parameters_and_declared_params():
    """Each stage passes its notebook only parameters it has, and declares exactly the params.yaml keys
    it reads (a whole section only when it reads all of it): changing one value reruns only the stages
    that use it."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in dvc["stages"].items():
        cmd = stage["cmd"]
        assert cmd.startswith("PYTHONPATH=src "), f"stage {name}: prefix cmd with PYTHONPATH=src"
        used = set(re.findall(r"\$\{(\w+)\.(\w+)\}", cmd)) - {("item", k) for k in stage.get("matrix", {})}
        for section, key in used:
            assert key in params[section], f"stage {name}: params.yaml lacks {section}.{key}"
        declared_params = {declared(p) for p in stage.get("params", [])}
        whole = {p for p in declared_params if "." not in p}
        assert all(set(params[section]) <= {k for s, k in used if s == section} for section in whole), \
            f"stage {name}: declares a whole section it does not fully use"
        assert {f"{s}.{k}" for s, k in used if s not in whole} | whole == declared_params, \
            f"stage {name}: declared params differ from those its command uses"
        notebook = re.search(r"papermill (\S+\.ipynb)", cmd)
        if notebook is None:  # a plain python step (collect)
            continue
        notebook = REPO / notebook.group(1)
        assert str(notebook.relative_to(REPO)) in stage["deps"], f"stage {name}: its notebook must be a dep"
        passed = set(re.findall(r"-p (\w+) ", cmd))
        for inline in re.findall(r'-y "\{([^}]*)\}"', cmd):  # YAML-typed values (booleans)
            passed |= {item.split(":")[0].strip() for item in inline.split(",")}
        assert passed <= parameters_of(notebook), f"stage {name}: passes unknown parameters {passed - parameters_of(notebook)}"


def test_evaluation_covers_exactly_the_trained_grid():
    """DVC cannot pass a list to a command, so the evaluation repeats the training grid as strings."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert [int(s) for s in params["evaluation"]["seeds"].split(",")] == params["train"]["seeds"]
    assert params["evaluation"]["train_domains"].split(",") == params["train"]["domains"]


def run_notebook(name, out_root, **parameters):
    papermill.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(out_root / f"{name}.ipynb"),
                               parameters={"out_root": str(out_root), **parameters}, cwd=str(REPO),
                               progress_bar=False, kernel_name="python3")


def test_notebook_chain_runs_end_to_end(tmp_path):
    """Every notebook, in pipeline order, with its smoke defaults, writing under a temporary out_root;
    then the collect step."""
    for path in NOTEBOOKS:
        run_notebook(path.stem, tmp_path)
    run_notebook("06_single_turn_baselines", tmp_path, baseline="rl")
    for condition in TRAINED[1:]:
        run_notebook("08_evaluate", tmp_path, condition=condition)
    summary = collect.collect(tmp_path)
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
    assert set(results["condition"]) == {"base", *TRAINED}
    assert set(results["eval_domain"]) == {"math", "code"}
    for _, cell in results.groupby(transcripts.KEYS):
        assert cell["success"].is_monotonic_increasing and list(cell["turn"]) == list(range(1, len(cell) + 1))
    behaviour = pd.read_csv(tmp_path / "metrics" / "behaviour.csv")
    assert list(behaviour.columns) == transcripts.BEHAVIOUR_COLUMNS
    assert len(behaviour) == 4 + 2 * len(TRAINED)  # base: 2 domains x 2 variants; trained: 2 eval domains
    assert (tmp_path / "data" / "transcripts" / "base" / "math_full_s0").exists()
    assert (tmp_path / "reports" / "figures" / "03_baseline.png").stat().st_size > 10_000
    for condition in TRAINED:
        adapter = tmp_path / "models" / condition / "math_s0"
        assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
        live = json.loads((tmp_path / "metrics" / "train" / condition / "math_s0" / "metrics.json").read_text())
        assert live.get("n_examples", 1) > 0 and "train" in live
        assert (tmp_path / "reports" / "figures" / f"08_evaluate_{condition}.png").stat().st_size > 10_000
        assert summary[condition]["math->math full"]["seeds"] == 1
    offline = json.loads((tmp_path / "data" / "offline" / "math_s0" / "summary.json").read_text())
    assert json.loads((tmp_path / "metrics" / "train" / "st_sft" / "math_s0" / "metrics.json").read_text())[
        "n_examples"] == offline["n_examples"]  # the same budget of examples
    for condition, curve, figure in (("sml_online", "reward", "05_online_sml"), ("st_rl", "success", "06_st_rl")):
        steps = pd.read_csv(tmp_path / "metrics" / "train" / condition / "math_s0" / "plots" / "metrics" / f"{curve}.tsv",
                            sep="\t")
        assert len(steps) == 2 and steps[curve].between(0, 1).all()  # the smoke runs take 2 GRPO steps
        assert (tmp_path / "reports" / "figures" / f"{figure}_math_s0.png").stat().st_size > 10_000
    assert set(summary["base"]) == {"none->math full", "none->math sharded", "none->code full", "none->code sharded"}
