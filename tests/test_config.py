"""sml.config: params.yaml and every notebook's parameters are checked up front, each problem named by
its key; the schema cannot drift from params.yaml, the notebooks' parameter cells or dvc.yaml."""

import copy
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sml import config

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
DELETE = object()


def parameters_cell(notebook):
    cells = json.loads((REPO / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
    return "".join(next(c for c in cells if "parameters" in c["metadata"].get("tags", []))["source"])


def defaults(notebook):
    namespace = {}
    exec(parameters_cell(notebook), namespace)
    namespace.pop("__builtins__")
    return namespace


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


def problems(check, *args):
    with pytest.raises(ValueError) as error:
        check(*args)
    return str(error.value).splitlines()


def test_the_repository_params_pass():
    config.check_params(PARAMS)
    assert config.check_params_file(REPO / "params.yaml") == PARAMS


def test_the_schema_covers_params_yaml_exactly():
    assert {s: set(keys) for s, keys in config.SCHEMA.items()} == {s: set(keys) for s, keys in PARAMS.items()}


def test_the_choices_mirror_the_modules_that_use_them():
    from sml.dialogue import engine, llm_teacher, teacher
    from sml.train import grpo
    from sml.tasks import schema, toy_code, toy_math

    build = importlib.import_module("sml.tasks.build")  # sml.tasks.build is also a function's name

    assert set(config.SOURCES) == set(build.SOURCES) and config.EVAL_ONLY == build.EVAL_ONLY
    assert set(config.MATH_SOURCES + config.CODE_SOURCES) == set(build.SOURCES)
    assert (config.GENERATORS, config.FAMILIES) == (toy_math.GENERATORS, toy_code.FAMILIES)
    assert (config.DOMAINS, config.VARIANTS) == (schema.DOMAINS, schema.VARIANTS)
    assert config.FEEDBACK == teacher.FEEDBACK_KINDS and config.TEACHER_KINDS == llm_teacher.KINDS
    assert config.SHARD_REVEAL == engine.SHARD_REVEAL and config.CREDIT == grpo.CREDIT
    from sml.evaluation import evaluate
    assert (config.GENERATION, config.VLLM_MODES) == (grpo.GENERATION, grpo.VLLM_MODES)
    assert config.EVAL_BACKENDS == evaluate.BACKENDS
    assert all(s in build.SOURCES and s not in build.EVAL_ONLY for s in sum(config.TRAIN_SOURCES.values(), ()))


@pytest.mark.parametrize("notebook", config.NOTEBOOKS)
def test_notebook_parameters_match_the_schema_and_their_defaults_pass(notebook):
    names = re.findall(r"^(\w+)\s*=", parameters_cell(notebook), re.MULTILINE)
    assert sorted(names) == sorted(config.NOTEBOOKS[notebook])
    assert config.check_notebook(notebook, defaults(notebook)) == defaults(notebook)


def papermill_value(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


STAGES = {name: stage for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()
          if "papermill" in stage["cmd"]}


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_passes_each_notebook_parameter_from_its_schema_key(stage):
    cmd = STAGES[stage]["cmd"]
    notebook = re.search(r"notebooks/(\w+)\.ipynb", cmd).group(1)
    passed = dict(re.findall(r'-p (\w+) "?([^"\s]*)"?', cmd))
    for inline in re.findall(r'-y "\{([^}]*)\}"', cmd):
        passed.update(re.findall(r"(\w+): (\S+?)(?:,|$)", inline))
    literals = {name: papermill_value(v) for name, v in passed.items() if not v.startswith("${")}
    for name, value in passed.items():
        assert name in config.NOTEBOOKS[notebook], f"stage {stage}: {notebook} has no parameter {name}"
        key = config.params_key(notebook, name, literals)
        source = re.fullmatch(r"\$\{(\w+\.\w+)\}", value)
        if source and not source.group(1).startswith("item."):
            assert key == source.group(1), f"stage {stage}: -p {name} {value}, but the schema reads it from {key}"
        else:  # a literal or a matrix item: no params.yaml key, a rule of its own
            assert key is None, f"stage {stage}: -p {name} {value}, but the schema reads it from {key}"
    config.check_notebook(notebook, {**defaults(notebook), **literals})
    for name, value in passed.items():  # every value of a matrix item passes as well
        item = re.fullmatch(r"\$\{item\.(\w+)\}", value)
        values = STAGES[stage]["matrix"][item.group(1)] if item else []
        if isinstance(values, str):  # e.g. ${train.domains}
            section, key = values[2:-1].split(".")
            values = PARAMS[section][key]
        for v in values:
            config.check_notebook(notebook, {**defaults(notebook), **literals, name: v})


@pytest.mark.parametrize("key, value, expected", [
    ("online_sml.steps", 0, "online_sml.steps: must be an integer >= 1, got 0"),
    ("online_sml.steps", 2.5, "online_sml.steps: must be an integer >= 1, got 2.5"),
    ("online_sml.group_size", 1, "online_sml.group_size: must be an integer >= 2, got 1"),
    ("online_sml.lr", "fast", "online_sml.lr: must be a number > 0, got 'fast'"),
    ("online_sml.credit", "turns", "online_sml.credit: must be one of 'conversation', 'turn', got 'turns' "
                                   "(did you mean 'turn'?)"),
    ("online_sml.init", "sml_ofline", "online_sml.init: must be one of 'base', 'sml_offline', got 'sml_ofline' "
                                      "(did you mean 'sml_offline'?)"),
    ("dialogue.gamma", 0, "dialogue.gamma: must be a number in (0, 1], got 0"),
    ("dialogue.top_p", 1.5, "dialogue.top_p: must be a number in (0, 1], got 1.5"),
    ("dialogue.temperature", -0.1, "dialogue.temperature: must be a number >= 0, got -0.1"),
    ("dialogue.block_leaks", "true", "dialogue.block_leaks: must be true or false, got 'true'"),
    ("finetune.lora_dropout", 1.0, "finetune.lora_dropout: must be a number in [0, 1), got 1.0"),
    ("teacher.kind", "vllm", "teacher.kind: must be one of 'scripted', 'hf', 'openai', got 'vllm'"),
    ("teacher.feedback", "verdict,hint", "teacher.feedback: must be a comma-separated string of 'verdict', "
                                         "'direction', 'step', 'tests', got 'verdict,hint': unknown 'hint'"),
    ("evaluation.variants", "full,shard", "evaluation.variants: must be a comma-separated string of 'full', "
                                          "'sharded', got 'full,shard': unknown 'shard' (did you mean 'sharded'?)"),
    ("evaluation.seeds", "0,1,x", "evaluation.seeds: must be a comma-separated string of integers >= 0, "
                                  "got '0,1,x': unknown 'x'"),
    ("train.domains", "math,code", "train.domains: must be a list of 'math', 'code', got 'math,code'"),
    ("train.seeds", [0, 0, 1], "train.seeds: must be a list of integers >= 0 without repeats, got [0, 0, 1]"),
    ("online_sml.stpes", 3, "online_sml.stpes: unknown key (did you mean 'steps'?)"),
    ("onlin_sml", {}, "onlin_sml: unknown section (did you mean 'online_sml'?)"),
    ("online_sml.beta", DELETE, "online_sml.beta: missing"),
    ("evaluation.seeds", "0,1", "evaluation.seeds: must equal train.seeds [0, 1, 2], got '0,1'"),
    ("evaluation.train_domains", "math", "evaluation.train_domains: must equal train.domains ['math', 'code'], "
                                         "got 'math'"),
    ("evaluation.code_source", "livecodebench", "evaluation.code_source: 'livecodebench' is not built: "
                                                "add it to tasks.sources"),
    ("tasks.math_min_terms", 4, "tasks.math_min_terms: must be <= tasks.math_max_terms (3), got 4"),
    ("teacher.kind", "hf", "teacher.model: required for teacher.kind 'hf'"),
    ("train.math_source", "omni_math", "train.math_source: 'omni_math' is not built: add it to tasks.sources"),
    ("train.code_source", "livecodebench", "train.code_source: must be one of 'toy_code', 'opencodeinstruct'"),
    ("generation.eval", "openai", "generation.eval_base_url: required for generation.eval 'openai'"),
    ("generation.vllm_mode", "server", None),  # fine while generation.grpo is the engine
    ("student.model", "", "student.model: must be a non-empty string"),
])
def test_bad_params_are_rejected_naming_the_key(key, value, expected):
    if expected is None:
        config.check_params(changed(PARAMS, key, value))
        return
    lines = problems(config.check_params, changed(PARAMS, key, value))
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_vllm_server_mode_needs_its_url():
    params = changed(changed(PARAMS, "generation.grpo", "vllm"), "generation.vllm_mode", "server")
    lines = problems(config.check_params, params)
    assert lines == ["generation.vllm_server_url: required for generation.vllm_mode 'server' (e.g. http://localhost:8000)"]


def test_every_problem_is_reported_at_once():
    params = changed(changed(changed(PARAMS, "online_sml.steps", 0), "dialogue.gamma", 2), "teacher.kind", "vllm")
    lines = problems(config.check_params, changed(params, "evaluation.seeds", "0"))
    assert sorted(line.split(":")[0] for line in lines) == ["dialogue.gamma", "evaluation.seeds", "online_sml.steps",
                                                            "teacher.kind"]


@pytest.mark.parametrize("notebook, changes, expected", [
    ("05_online_sml", {"steps": 0}, "online_sml.steps (notebook parameter steps): must be an integer >= 1, got 0"),
    ("05_online_sml", {"lr": "1e-3"}, "online_sml.lr (notebook parameter lr): must be a number > 0, got '1e-3'"),
    ("05_online_sml", {"stpes": 3}, "stpes (notebook 05_online_sml): unknown parameter (did you mean 'steps'?)"),
    ("05_online_sml", {"beta": DELETE}, "online_sml.beta (notebook parameter beta): not set"),
    ("04_offline_sml", {"train_domain": "physics"}, "train_domain (notebook 04_offline_sml): must be one of "
                                                    "'math', 'code', got 'physics'"),
    ("04_offline_sml", {"max_turns": 0}, "dialogue.train_turns (notebook parameter max_turns): must be an integer"),
    ("06_single_turn_baselines", {"n_tasks": 0}, "offline_sml.n_tasks (notebook parameter n_tasks): must be"),
    ("06_single_turn_baselines", {"baseline": "rl", "n_tasks": 0}, "online_sml.n_tasks (notebook parameter "
                                                                   "n_tasks): must be"),
    ("06_single_turn_baselines", {"group_size": 1}, "st_rl.group_size (notebook parameter group_size): must be an "
                                                    "integer >= 2, got 1"),
    ("08_evaluate", {"condition": "sml"}, "condition (notebook 08_evaluate): must be one of"),
    ("03_baseline_dialogues", {"block_leaks": 1}, "dialogue.block_leaks (notebook parameter block_leaks): must be "
                                                  "true or false, got 1"),
    ("02_base_student", {"num_kv_heads": 3}, "base_student.num_heads (notebook parameter num_heads): must be a "
                                             "multiple of base_student.num_kv_heads (3), got 2"),
    ("01_tasks", {"sources": "toy_math,toy_mat"}, "tasks.sources (notebook parameter sources): must be a "
                                                  "comma-separated string of"),
])
def test_bad_notebook_parameters_are_rejected_naming_the_key(notebook, changes, expected):
    values = defaults(notebook)
    for name, value in changes.items():
        values = changed(values, name, value)
    lines = problems(config.check_notebook, notebook, values)
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_check_notebook_takes_globals_and_returns_the_parameters():
    """Modules, functions and private names around the parameters are not taken for parameters."""
    settings = config.check_notebook("08_evaluate", {**defaults("08_evaluate"), "config": config, "json": json,
                                                     "load": json.loads, "_": 3, "In": [""], "Out": {}})
    assert settings == defaults("08_evaluate")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sml.config", *args], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": ""})


def test_cli(tmp_path):
    good = run_cli()
    assert good.returncode == 0 and good.stdout == "params.yaml: ok\n", good.stderr
    bad = tmp_path / "params.yaml"
    bad.write_text((REPO / "params.yaml").read_text().replace("steps: 12 ", "steps: 0 "))
    result = run_cli(str(bad))
    assert result.returncode == 1 and "online_sml.steps: must be an integer >= 1, got 0" in result.stderr


def test_a_params_file_is_read_as_dvc_reads_it(tmp_path):
    """YAML 1.2, as DVC: 1e-5 is a number (PyYAML would read the string '1e-5')."""
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text().replace("lr: 0.0005", "lr: 1e-5"))
    assert config.check_params_file(path)["online_sml"]["lr"] == 1e-5
