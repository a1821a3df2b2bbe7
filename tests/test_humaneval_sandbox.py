"""All 164 HumanEval canonical solutions pass in the sandbox; a corrupted variant of each fails."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from sml.tasks.humaneval import load_humaneval
from sml.verify.code import run_tests

# Appended to a canonical solution: the entry point now returns a slightly wrong value of the same kind.
CORRUPTION = '''
def _corrupt(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "#"
    if isinstance(value, (list, tuple)):
        return type(value)(list(value) + [None])
    return 0 if value is None else None
_original = {name}
def {name}(*args, **kwargs):
    return _corrupt(_original(*args, **kwargs))
'''


@pytest.fixture(scope="module")
def problems():
    return load_humaneval()


def run_all(problems, corrupt):
    def one(task):
        code = task["solution"] + (CORRUPTION.format(name=task["entry_point"]) if corrupt else "")
        return task["id"], run_tests(code, task["tests"], task["test_setup"], timeout_s=30)
    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(one, problems))


def test_all_164_canonical_solutions_pass(problems):
    assert len(problems) == 164
    results = run_all(problems, corrupt=False)
    failing = {k: r["results"] for k, r in results.items() if not r["passed"]}
    assert failing == {}


def test_every_corrupted_solution_fails(problems):
    results = run_all(problems, corrupt=True)
    passing = [k for k, r in results.items() if r["passed"]]
    assert passing == []
    # and they fail on the tests, not by crashing at load
    assert all(r["load_error"] is None for r in results.values())
