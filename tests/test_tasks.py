import ast
import json
import re

import pytest

from sml import settings, tasks
from sml.tasks import toy_code, toy_math
from sml.tasks.schema import make_task, prompt_for, validate_task
from sml.verify import verify

PARAMS = settings.Tasks(seed=0, sources="toy_math,toy_code,humaneval", hub_dir="", n_train=30, n_dev=6, n_eval=10,
                        math_generator="basic_arithmetic", math_min_terms=2, math_max_terms=3, math_min_digits=1,
                        math_max_digits=2, code_families="int,list,str", code_min_steps=1, code_max_steps=2,
                        code_n_tests=5, code_worked=False, code_max_constant=9)


def test_generators_are_deterministic_and_distinct():
    for generate in (toy_math.generate, toy_code.generate):
        a, b, c = generate(50, seed=1), generate(50, seed=1), generate(50, seed=2)
        assert a == b and a != c
        assert len({t["prompt"] for t in a}) == 50


def test_every_record_fits_the_schema():
    for task in toy_math.generate(20, 0) + toy_code.generate(20, 0):
        validate_task(task)
        assert set(task) == set(tasks.FEATURES)
        json.loads(task["metadata"])


def test_reference_solutions_pass_and_wrong_ones_fail():
    for task in toy_math.generate(10, 0) + toy_code.generate(10, 0):
        assert verify(task, task["solution"])["passed"], task["id"]
    for task in toy_code.generate(5, 0):
        assert not verify(task, task["solution"].replace("return ", "return 1 + ", 1))["passed"]


def _evaluate_shards(shards):
    """Recompute an arithmetic task from its shards alone (each step refers to earlier results)."""
    results = []
    for shard in shards[1:]:
        step = shard.split(": ", 1)[1].rstrip(".")
        for i in range(len(results), 0, -1):
            step = step.replace(f"the result of step {i}", f"({results[i - 1]})")
        expr = step.removeprefix("compute ").replace("negate ", "-")
        results.append(eval(compile(ast.parse(expr, mode="eval"), "<shard>", "eval")))
    return results[-1]


def test_math_shards_carry_exactly_the_problem():
    for task in toy_math.generate(40, 3, max_terms=4):
        assert len(task["shards"]) >= 2 and "step" in task["shards"][0]
        assert _evaluate_shards(task["shards"]) == pytest.approx(float(task["answer"]))


def test_code_shards_and_tests():
    for task in toy_code.generate(30, 0, n_tests=4):
        assert len(task["tests"]) == 4 and task["entry_point"] == "f"
        assert len(task["shards"]) >= 2 and task["shards"][0].startswith("Write a Python function")
        assert len(set(t.split("==")[1] for t in task["tests"])) >= 2  # no constant-function tasks


def test_variants():
    task = toy_code.generate(1, 0)[0]
    assert prompt_for(task, "full") == task["prompt"]
    assert prompt_for(task, "sharded") == task["shards"][0]
    with pytest.raises(tasks.TaskError, match="variant"):
        prompt_for(task, "hidden")


def test_build_writes_seeded_disjoint_splits(tmp_path):
    counts = tasks.build(PARAMS, tmp_path)
    assert counts["toy_math"]["train"]["tasks"] == 30 and counts["toy_code"]["eval"]["tasks"] == 10
    assert "train" not in counts["humaneval"]  # a benchmark is never trained on
    for source in ("toy_math", "toy_code"):
        train, test = tasks.load_tasks(tmp_path, source, "train"), tasks.load_tasks(tmp_path, source, "eval")
        assert not set(train["prompt"]) & set(test["prompt"])
    again = tasks.build(PARAMS, tmp_path / "again")
    assert counts == again
    assert tasks.load_tasks(tmp_path, "toy_code")["id"] == tasks.load_tasks(tmp_path / "again", "toy_code")["id"]
    assert json.loads((tmp_path / "counts.json").read_text()) == counts


def test_the_dev_train_and_eval_splits_are_pairwise_disjoint(tmp_path):
    """Calibration and tuning read dev; training reads train (``sft.training_tasks``); evaluation reads eval."""
    from sml.train.sft import training_tasks

    counts = tasks.build(PARAMS, tmp_path)
    assert "dev" not in counts["humaneval"]
    for source in ("toy_math", "toy_code"):
        prompts = {name: set(tasks.load_tasks(tmp_path, source, name)["prompt"]) for name in ("train", "dev", "eval")}
        assert [len(p) for p in prompts.values()] == [PARAMS.n_train, PARAMS.n_dev, PARAMS.n_eval]
        assert not prompts["dev"] & prompts["train"] and not prompts["dev"] & prompts["eval"]
        assert not prompts["train"] & prompts["eval"]
        trained = set(training_tasks(tmp_path, source, n_tasks=10_000, seed=3)["prompt"])
        assert trained == prompts["train"]  # every training task, and no dev or eval one


def test_reading_a_task_set_never_writes_into_it(tmp_path):
    """The task folder is a DVC output: cache files left by a shuffle or filter would change it."""
    tasks.build(PARAMS, tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    train = tasks.load_tasks(tmp_path, "toy_math", "train")
    train.shuffle(seed=1).filter(lambda t: True).select(range(3))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_impossible_difficulty_is_reported():
    with pytest.raises(tasks.TaskError, match="distinct problems"):
        toy_math.generate(5000, 0, min_terms=2, max_terms=2, min_digits=1, max_digits=1)
    with pytest.raises(tasks.TaskError, match="code_max_steps"):
        toy_code.generate(5000, 0, families=("str",), min_steps=1, max_steps=1)


def test_malformed_records_are_named():
    good = dict(id="x/1", domain="code", source="t", prompt="p", entry_point="f", tests=["assert f() == 1"])
    make_task(**good)
    for change, field in [({"domain": "bio"}, "domain"), ({"tests": []}, "tests"), ({"prompt": " "}, "prompt"),
                          ({"entry_point": ""}, "entry_point"), ({"shards": ["only intent"]}, "shards")]:
        with pytest.raises(tasks.TaskError, match=rf"x/1.*{field}"):
            make_task(**{**good, **change})
    with pytest.raises(tasks.TaskError, match="answer"):
        make_task(id="m/1", domain="math", source="t", prompt="2+2?")


def test_missing_task_set_has_a_helpful_error(tmp_path):
    with pytest.raises(tasks.TaskError, match="dvc repro tasks"):
        tasks.load_tasks(tmp_path, "toy_math")


def test_worked_code_solutions_name_each_step_before_its_line():
    """``tasks.code_worked``: the same tasks (prompts, tests), each solution line after a comment that names its
    step in the prompt's words; the solutions still pass their tests."""
    plain, worked = toy_code.generate(60, 3), toy_code.generate(60, 3, worked=True)
    assert [t["prompt"] for t in plain] == [t["prompt"] for t in worked]
    assert [t["tests"] for t in plain] == [t["tests"] for t in worked]
    for p, w in zip(plain, worked):
        body = w["solution"].splitlines()[1:-1]
        if json.loads(w["metadata"])["family"] == "list":
            assert w["solution"] == p["solution"]  # one line whatever its conditions
            continue
        comments, lines = body[0::2], body[1::2]
        assert [line.strip() for line in lines] == [line.strip() for line in p["solution"].splitlines()[1:-1]]
        steps = [c.strip().removeprefix("# ") for c in comments]
        assert all(c.strip().startswith("# ") for c in comments) and len(steps) == json.loads(w["metadata"])["steps"]
        assert ", then ".join(steps) in w["prompt"]  # the prompt's words, in its order
        namespace = {}
        exec(w["solution"], namespace)
        for test in w["tests"]:
            exec(test, namespace)


def test_integer_constants_widen_the_integer_family():
    """``tasks.code_max_constant``: at 9 the tasks are today's; larger, the integer family's 1-2 step space
    (about 1,660 prompts at 9) holds a full task set and its steps use the new constants; every solution passes."""
    assert toy_code.generate(40, 2) == toy_code.generate(40, 2, max_constant=9)
    with pytest.raises(tasks.TaskError, match="distinct tasks"):
        toy_code.generate(2000, 0, families=("int",))
    wide = toy_code.generate(2000, 0, families=("int",), max_constant=15)
    constants = {int(k) for t in wide for k in re.findall(r"(?:adds|subtracts|by|modulo) (\d+)", t["prompt"])}
    assert constants == set(range(2, 16))
    for task in wide:
        namespace = {}
        exec(task["solution"], namespace)
        for test in task["tests"]:
            exec(test, namespace)
