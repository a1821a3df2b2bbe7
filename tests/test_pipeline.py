"""Plumbing: notebooks are clean sources, the DVC stages match params.yaml and the notebooks'
parameters, and the whole notebook chain runs end to end with its smoke defaults."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest
import yaml

from sml.evaluation import claims, collect, transcripts
from sml import resume

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TRAINED = ("sml_offline", "st_sft", "sml_online", "st_rl", "sml_qprime")  # the conditions the smoke chain trains and evaluates


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


def reads(notebook, baseline=None):
    """What a notebook reads of its settings: "section.key", or "section" for a section it passes on whole.
    With ``baseline``, the cells of the other baseline (06: ``if baseline == ...``) are left out."""
    cells = [c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"
             and not (baseline and re.match(r'if baseline == "(?!%s")' % baseline, c.source))]
    code = "\n".join(cells)
    if baseline:  # `cfg.a if baseline == "sft" else cfg.b`: the stage's own branch
        code = re.sub(r'(cfg\.\w+(?:\.\w+)?) if baseline == "(\w+)" else (cfg\.\w+(?:\.\w+)?)',
                      lambda m: m.group(1) if m.group(2) == baseline else m.group(3), code)
    found = re.findall(r"\bcfg\.(\w+)(?:\.(\w+))?", code)
    return {f"{s}.{k}" if k else s for s, k in found if s not in ("dump", "show")}


def test_stages_pass_only_the_settings_file_and_declare_what_their_notebook_reads():
    """Each stage passes its notebook only the settings file (params.yaml), out_root and its matrix cell, and
    declares the params.yaml keys the notebook reads: changing one value reruns the stages that use it."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in dvc["stages"].items():
        cmd = stage["cmd"]
        assert cmd.startswith("PYTHONPATH=src "), f"stage {name}: prefix cmd with PYTHONPATH=src"
        declared_params = {declared(p) for p in stage.get("params", [])}
        for key in declared_params:
            section, _, name_ = key.partition(".")
            assert section in params and (not name_ or name_ in params[section]), f"stage {name}: no {key} to declare"
        notebook = re.search(r"papermill (\S+\.ipynb)", cmd)
        if notebook is None:  # a plain python step (collect)
            continue
        notebook = REPO / notebook.group(1)
        assert str(notebook.relative_to(REPO)) in stage["deps"], f"stage {name}: its notebook must be a dep"
        passed = dict(re.findall(r"-p (\w+) (\S+)", cmd))
        assert passed.get("settings_file") == "params.yaml", f"stage {name}: pass -p settings_file params.yaml"
        assert set(passed) <= parameters_of(notebook), f"stage {name}: passes unknown {set(passed) - parameters_of(notebook)}"
        # machine (threads, worker processes) says how a stage runs, never what it computes: no stage declares it,
        # so changing it reruns nothing
        assert "machine" not in {key.partition(".")[0] for key in declared_params}, f"stage {name} declares machine"
        for read in reads(notebook, passed.get("baseline")):
            section = read.split(".")[0]
            if section == "machine":
                continue
            # a section passed on whole (``cfg.dialogue``) may be read key by key: the stage declares all of it
            covered = section in declared_params or read in declared_params
            assert covered, f"stage {name}: {notebook.name} reads {read}: declare it in the stage's params"


def run_notebook(name, out_root, **parameters):
    papermill.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(out_root / f"{name}.ipynb"),
                               parameters={"out_root": str(out_root), **parameters}, cwd=str(REPO),
                               progress_bar=False, kernel_name="python3")


AFTER_COLLECT = ("09_loss_diagnostic", "10_report")  # these read every condition's evaluation


def run_chain(out_root):
    """Every notebook, in pipeline order, with its smoke defaults, writing under ``out_root``, the collect
    step before the report. Returns the summary."""
    for path in NOTEBOOKS:
        if path.stem not in AFTER_COLLECT:
            run_notebook(path.stem, out_root)
    run_notebook("06_single_turn_baselines", out_root, baseline="rl")
    for condition in TRAINED[1:]:
        run_notebook("08_evaluate", out_root, condition=condition)
    run_notebook("09_loss_diagnostic", out_root)
    summary = collect.collect(out_root)
    run_notebook("10_report", out_root)
    return summary


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    out_root = tmp_path_factory.mktemp("chain")
    return out_root, run_chain(out_root)


def test_notebook_chain_runs_end_to_end(chain):
    tmp_path, summary = chain
    counts = json.loads((tmp_path / "metrics" / "tasks.json").read_text())
    assert counts["toy_math"]["train"] > 0 and counts["toy_code"]["eval"] > 0
    assert counts["toy_code"]["reference_pass_rate"] == 1.0
    assert (tmp_path / "data" / "tasks" / "toy_math" / "dataset_dict.json").exists()
    assert (tmp_path / "reports" / "figures" / "01_tasks.png").stat().st_size > 10_000
    assert (tmp_path / "models" / "base_student" / "config.json").exists()
    assert {"parameters", "final_loss", "sr1_math", "sr1_code", "well_formed_after_feedback_math",
            "well_formed_after_feedback_code"} <= set(json.loads(
        (tmp_path / "metrics" / "base_student.json").read_text()))
    results = pd.read_csv(tmp_path / "metrics" / "eval.csv")
    assert list(results.columns) == transcripts.EVAL_COLUMNS
    assert set(results["condition"]) == {"base", *TRAINED}
    assert set(results["eval_domain"]) == {"math", "code"}
    for _, cell in results.groupby(transcripts.KEYS):
        assert cell["success"].is_monotonic_increasing and list(cell["turn"]) == list(range(1, len(cell) + 1))
    behaviour = pd.read_csv(tmp_path / "metrics" / "behaviour.csv")
    assert list(behaviour.columns) == transcripts.BEHAVIOUR_COLUMNS
    assert len(behaviour) == 4 * (1 + len(TRAINED))  # each condition: 2 eval domains x 2 variants (full, sharded)
    assert (tmp_path / "data" / "transcripts" / "base" / "math_full_s0").exists()
    assert (tmp_path / "reports" / "figures" / "03_baseline.png").stat().st_size > 10_000
    assert (tmp_path / "reports" / "figures" / "03_feedback_use.png").stat().st_size > 10_000
    for condition in TRAINED:
        adapter = tmp_path / "models" / condition / "math_s0"
        assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
        live = json.loads((tmp_path / "metrics" / "train" / condition / "math_s0" / "metrics.json").read_text())
        assert live.get("n_examples", 1) > 0 and "train" in live
        assert (tmp_path / "reports" / "figures" / f"08_evaluate_{condition}.png").stat().st_size > 10_000
        assert (tmp_path / "reports" / "figures" / f"08_feedback_use_{condition}.png").stat().st_size > 10_000
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
    # Q-priming: the schedule of injected questions, the transcripts that carry them, and the sharded behaviour
    schedule = pd.read_csv(tmp_path / "metrics" / "train" / "qprime_sft" / "math_s0" / "schedule.csv")
    assert schedule["turn"].iloc[0] == 1 and schedule["injected"].sum() > 0
    assert (schedule["injected"] <= schedule["failed_turns"]).all()
    injected = transcripts.load(tmp_path / "data" / "qprime" / "math_s0")["injected"]
    assert sum(how != "" for turns in injected for how in turns) == schedule["injected"].sum()
    assert (tmp_path / "models" / "qprime_sft" / "math_s0" / "adapter_config.json").exists()
    for condition, cell in (("base", "none->math sharded"), ("sml_qprime", "math->code sharded")):
        rates = summary[condition][cell]
        for name in ("premature_rate", "question_rate"):
            low, high = rates[f"{name}_ci"]
            assert 0 <= low <= rates[name] <= high <= 1
        assert (tmp_path / "reports" / "figures" / f"08_sharded_{condition}.png").exists() or condition == "base"
    assert not (tmp_path / resume.WORK).exists() or not any((tmp_path / resume.WORK).iterdir())  # work cleaned up
    # the diagnostic and the report
    diagnostic = json.loads((tmp_path / "metrics" / "diagnostic.json").read_text())
    assert set(diagnostic) == {"base", *TRAINED}
    drop = diagnostic["sml_online"]["math->math full"]
    assert drop["turns"] == 2 and drop["dialogues"] > 0 and drop["drop_ci"][0] <= drop["drop"] <= drop["drop_ci"][1]
    assert set(pd.read_csv(tmp_path / "metrics" / "diagnostic.csv")["turn"]) == {1, 2}
    for name in ("sr_at_k", "feedback_use", "cross_domain", "turn_generalisation", "sharded", "loss_diagnostic", "training_curves"):
        assert (tmp_path / "reports" / "figures" / f"10_{name}.png").stat().st_size > 10_000, name
    sr = pd.read_csv(tmp_path / "metrics" / "sr_curves.csv")
    assert set(sr["condition"]) == {"base", *TRAINED} and sr["ci_low"].le(sr["success"]).all()
    executed = nbformat.read(tmp_path / "10_report.ipynb", as_version=4)
    shown = "".join(str(o.get("data", {}).get("text/markdown", "")) for c in executed.cells if c.cell_type == "code"
                    for o in c.outputs)
    assert shown.count("\n| ") == len(claims.CLAIMS)  # the claims table, one row per claim


def metric_files(out_root):
    return sorted(p.relative_to(out_root) for p in (out_root / "metrics").rglob("*.csv"))


def test_a_rerun_gives_identical_metrics(chain, tmp_path):
    """Determinism: the same seeds give byte-identical metric tables, adapters and report figures on a rerun."""
    first, _ = chain
    run_chain(tmp_path)
    assert metric_files(tmp_path) == metric_files(first) and len(metric_files(first)) >= 10
    for path in metric_files(first):
        assert (tmp_path / path).read_bytes() == (first / path).read_bytes(), f"{path} differs on a rerun"
    for adapter in (first / "models").glob("*/math_s0/adapter_model.safetensors"):
        assert (tmp_path / adapter.relative_to(first)).read_bytes() == adapter.read_bytes()
    figures = sorted(p for p in (first / "reports" / "figures").glob("*.png")
                     if p.name[:2] in ("08", "09", "10"))  # the evaluation's, the diagnostic's and the report's
    assert len(figures) >= 7
    for figure in figures:
        assert (tmp_path / figure.relative_to(first)).read_bytes() == figure.read_bytes(), f"{figure.name} differs"


def copy_inputs(chain_root, out_root):
    for part in ("data/tasks", "models/base_student"):
        shutil.copytree(chain_root / part, out_root / part)


def curves(out_root):
    """The per-step dvclive curves of the online SML run (without timestamps). Left out: the one-row
    summaries of the trainer's last log (runtime, and a mean loss over the steps this process ran)."""
    folder = out_root / "metrics" / "train" / "sml_online" / "math_s0" / "plots" / "metrics"
    tables = {str(p.relative_to(folder)): pd.read_csv(p, sep="\t") for p in folder.rglob("*.tsv")}
    return {name: t.drop(columns="timestamp", errors="ignore").to_dict("list") for name, t in tables.items()
            if len(t) > 1 and "time" not in name}


def test_a_killed_stage_resumes_to_the_uninterrupted_result(chain, tmp_path):
    """Kill online SML (a real SIGKILL to its papermill process) once it has saved a checkpoint, run it again,
    and get the adapter and training curves of a run that was never interrupted."""
    chain_root, _ = chain
    profile = tmp_path / "kill.yaml"  # the smoke sizes, and a run long enough to be killed halfway
    values = {**yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text()),
              "online_sml.steps": 4, "resume.checkpoint_steps": 1, "dialogue.temperature": 1.5}
    profile.write_text(yaml.safe_dump(values))
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for root in (straight, killed):
        copy_inputs(chain_root, root)
    run_notebook("05_online_sml", straight, settings_file=str(profile))

    cmd = [sys.executable, "-m", "papermill", str(REPO / "notebooks" / "05_online_sml.ipynb"), str(killed / "05.ipynb"),
           "-p", "out_root", str(killed), "-p", "settings_file", str(profile)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    deadline = time.monotonic() + 300
    while not list((killed / resume.WORK).glob("05_online_sml_math_s0/*/trainer/checkpoint-2/trainer_state.json")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the kernel too: nothing gets to clean up
    proc.wait()
    assert not (killed / "models" / "sml_online" / "math_s0").exists()

    run_notebook("05_online_sml", killed, settings_file=str(profile))
    adapter = Path("models/sml_online/math_s0/adapter_model.safetensors")
    assert (killed / adapter).read_bytes() == (straight / adapter).read_bytes()
    assert curves(killed) == curves(straight) and len(curves(straight)["reward.tsv"]["step"]) == 4
    assert not (killed / resume.WORK / "05_online_sml_math_s0").exists()  # its work is cleaned up once done
