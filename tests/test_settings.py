"""sml.settings: every setting declared once, params.yaml and profiles checked up front, each problem named
by its key, every problem at once."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from sml import settings

REPO = Path(__file__).resolve().parents[1]
PARAMS = settings.read_yaml(REPO / "params.yaml")
DELETE = object()


def changed(tree, key, value):
    """A deep copy of ``tree`` with the dotted ``key`` set to ``value`` (DELETE: removed)."""
    tree = copy.deepcopy(tree)
    *path, last = key.split(".")
    inner = tree
    for part in path:
        inner = inner.setdefault(part, {})
    if value is DELETE:
        del inner[last]
    else:
        inner[last] = value
    return tree


def problems(params):
    with pytest.raises(ValueError) as error:
        settings.check(params)
    return str(error.value).splitlines()


def test_the_repository_settings_and_profiles_pass():
    assert settings.load(REPO / "params.yaml").dump() == PARAMS
    for profile in (REPO / "profiles").glob("*.yaml"):
        if "vllm" not in profile.read_text() or settings.missing("vllm", "vllm", "") is None:
            settings.load(profile)


def test_the_declarations_cover_params_yaml_exactly():
    assert {s: set(m.model_fields) for s, m in settings.SECTIONS.items()} == {s: set(v) for s, v in PARAMS.items()}


def test_training_sources_are_never_evaluation_only_benchmarks():
    import importlib
    from typing import get_args

    build = importlib.import_module("sml.tasks.build")  # sml.tasks.build is also a function's name
    fields = settings.Train.model_fields
    train_sources = get_args(fields["math_source"].annotation) + get_args(fields["code_source"].annotation)
    assert all(s in settings.SOURCES and s not in build.EVAL_ONLY for s in train_sources)
    assert set(get_args(settings.MathSource) + get_args(settings.CodeSource)) == set(settings.SOURCES)


@pytest.mark.parametrize("key, value, expected", [
    ("online_sml.steps", 0, "online_sml.steps: must be >= 1, got 0"),
    ("online_sml.steps", 2.5, "online_sml.steps: must be an integer, got 2.5"),
    ("online_sml.steps", True, "online_sml.steps: must be an integer, got True"),
    ("online_sml.group_size", 1, "online_sml.group_size: must be >= 2, got 1"),
    ("online_sml.lr", "fast", "online_sml.lr: must be a number, got 'fast'"),
    ("online_sml.credit", "turns", "online_sml.credit: must be one of 'conversation', 'turn', got 'turns' "
                                   "(did you mean 'turn'?)"),
    ("online_sml.init", "sml_ofline", "online_sml.init: must be one of 'base', 'sml_offline', got 'sml_ofline' "
                                      "(did you mean 'sml_offline'?)"),
    ("dialogue.gamma", 0, "dialogue.gamma: must be > 0, got 0"),
    ("dialogue.top_p", 1.5, "dialogue.top_p: must be <= 1, got 1.5"),
    ("dialogue.temperature", -0.1, "dialogue.temperature: must be >= 0, got -0.1"),
    ("dialogue.block_leaks", "true", "dialogue.block_leaks: must be true or false, got 'true'"),
    ("finetune.lora_dropout", 1.0, "finetune.lora_dropout: must be < 1, got 1.0"),
    ("teacher.kind", "vllm", "teacher.kind: must be one of 'scripted', 'hf', 'openai', got 'vllm'"),
    ("teacher.feedback", "verdict,hint", "teacher.feedback: must be a comma-separated string of 'verdict', "
                                         "'direction', 'step', 'tests', got 'verdict,hint': unknown 'hint'"),
    ("evaluation.variants", "full,shard", "evaluation.variants: must be a comma-separated string of 'full', "
                                          "'sharded', got 'full,shard': unknown 'shard' (did you mean 'sharded'?)"),
    ("evaluation.split", "train", "evaluation.split: must be one of 'eval', 'dev', got 'train'"),
    ("base_student.example_share", 1.5, "base_student.example_share: must be <= 1, got 1.5"),
    ("train.domains", "math,code", "train.domains: must be a list, got 'math,code'"),
    ("train.domains", ["math", "physics"], "train.domains: must be one of 'math', 'code', got 'physics'"),
    ("train.seeds", [0, 0, 1], "train.seeds: must be a list without repeats, got [0, 0, 1]"),
    ("online_sml.stpes", 3, "online_sml.stpes: unknown key (did you mean 'steps'?)"),
    ("onlin_sml", {}, "onlin_sml: unknown section (did you mean 'online_sml'?)"),
    ("online_sml.beta", DELETE, "online_sml.beta: missing"),
    ("st_rl", DELETE, "st_rl: missing section"),
    ("evaluation.code_source", "livecodebench", "evaluation.code_source: 'livecodebench' is not built: "
                                                "add it to tasks.sources"),
    ("tasks.math_min_terms", 4, "tasks.math_min_terms: must be <= tasks.math_max_terms (3), got 4"),
    ("base_student.num_kv_heads", 3, "base_student.num_heads: must be a multiple of base_student.num_kv_heads (3)"),
    ("teacher.kind", "hf", "teacher.model: required for teacher.kind 'hf'"),
    ("train.math_source", "omni_math", "train.math_source: 'omni_math' is not built: add it to tasks.sources"),
    ("train.code_source", "livecodebench", "train.code_source: must be one of 'toy_code', 'opencodeinstruct'"),
    ("generation.eval", "openai", "generation.eval_base_url: required for generation.eval 'openai'"),
    ("diagnostic.turns", 11, "diagnostic.turns: must be <= dialogue.eval_turns (10)"),
    ("generation.vllm_mode", "server", None),  # fine while generation.grpo is the engine
    ("online_sml.micro_batch", 3, "online_sml.micro_batch: must be 0 or divide the conversations of a step "
                                  "(online_sml: 32, st_rl: 128), got 3"),
    ("online_sml.micro_batch", 64, "online_sml.micro_batch: must be 0 or divide the conversations of a step "
                                   "(online_sml: 32), got 64"),
    ("online_sml.micro_batch", 16, None),
    ("student.model", "", "student.model: must be a non-empty string"),
])
def test_bad_settings_are_rejected_naming_the_key(key, value, expected):
    if expected is None:
        settings.check(changed(PARAMS, key, value))
        return
    # the default scripted teacher restates the problem, which no other teacher does (tested on its own below)
    params = changed(PARAMS, "teacher.restate", False) if key == "teacher.kind" else PARAMS
    lines = problems(changed(params, key, value))
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_every_problem_is_reported_at_once():
    params = changed(changed(PARAMS, "online_sml.steps", 0), "dialogue.gamma", 2)
    params = changed(changed(params, "teacher.kind", "vllm"), "tasks.math_min_terms", 9)
    assert sorted(line.split(":")[0] for line in problems(params)) == [
        "dialogue.gamma", "online_sml.steps", "tasks.math_min_terms", "teacher.kind"]


def test_a_profile_is_laid_over_params_yaml(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (tmp_path / "profiles").mkdir()
    profile = tmp_path / "profiles" / "mine.yaml"
    profile.write_text("online_sml.steps: 3\ndialogue.gamma: 0.5\n")
    cfg = settings.load(profile)
    assert (cfg.online_sml.steps, cfg.dialogue.gamma) == (3, 0.5)
    assert cfg.offline_sml == settings.load(tmp_path / "params.yaml").offline_sml
    profile.write_text("online_sml.stesp: 3\n")
    with pytest.raises(ValueError, match=r"online_sml.stesp: unknown key \(did you mean 'online_sml.steps'\?\)"):
        settings.load(profile)


def test_a_changed_value_reaches_the_settings_with_no_other_edit(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text().replace("lr: 0.0005", "lr: 1e-5"))
    assert settings.load(path).online_sml.lr == 1e-5  # YAML 1.2, as DVC reads it (PyYAML: the string '1e-5')


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sml.settings", *args], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": ""})


def test_cli(tmp_path):
    good = run_cli()
    assert good.returncode == 0 and good.stdout == "params.yaml: ok\n", good.stderr
    bad = tmp_path / "params.yaml"
    text = (REPO / "params.yaml").read_text()
    steps = f"  steps: {PARAMS['online_sml']['steps']} "
    assert text.count(steps) == 1, "params.yaml: expected one line for online_sml.steps"
    bad.write_text(text.replace(steps, "  steps: 0 "))
    result = run_cli(str(bad))
    assert result.returncode == 1 and "online_sml.steps: must be >= 1, got 0" in result.stderr


def test_a_value_changed_in_a_settings_file_reaches_the_notebook(tmp_path, capsys):
    """A notebook's parameters are only the file, out_root and its matrix cell: edit the file, nothing else."""
    profile = tmp_path / "mine.yaml"
    profile.write_text("online_sml.steps: 7\n")
    namespace = {"settings_file": str(profile), "out_root": "runs/x", "train_domain": "code", "seed": 2,
                 "os": object(), "_private": 1}
    cfg = settings.for_notebook(namespace, "online_sml")
    assert cfg.online_sml.steps == 7 and "  steps: 7" in capsys.readouterr().out  # the executed notebook shows it


def test_every_stage_sets_its_torch_threads_on_purpose(tmp_path):
    """``machine.threads``: the notebook's process runs with that many torch threads, or one per core at 0."""
    import os

    import torch

    before = torch.get_num_threads()
    try:
        for threads, expected in ((1, 1), (0, len(os.sched_getaffinity(0)))):
            profile = tmp_path / "threads.yaml"
            profile.write_text(f"machine.threads: {threads}\n")
            settings.for_notebook({"settings_file": str(profile), "out_root": "runs/x"}, "student")
            assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("changes, expected", [
    ({"stpes": 3}, "stpes (notebook parameter): unknown"),
    ({"seed": -1}, "seed (notebook parameter): must be >= 0, got -1"),
    ({"train_domain": "physics"}, "train_domain (notebook parameter): must be one of 'math', 'code', got 'physics'"),
    ({"condition": "sml"}, "condition (notebook parameter): must be one of"),
])
def test_bad_notebook_parameters_are_rejected_naming_them(changes, expected):
    namespace = {"settings_file": "params.yaml", "out_root": ".", "train_domain": "math", "seed": 0, **changes}
    with pytest.raises(ValueError) as error:
        settings.for_notebook(namespace)
    assert str(error.value).startswith(expected), error.value


def test_only_the_scripted_teacher_restates_the_problem():
    params = changed(changed(changed(PARAMS, "teacher.kind", "hf"), "teacher.model", "m"), "teacher.restate", True)
    assert problems(params) == ["teacher.restate: only the scripted teacher restates the problem, not 'hf'"]
