"""The program that runs inside the sandbox: candidate code, then each hidden test, one JSON line each.

It is filled in by ``sml.verify.code.harness_program``. Result lines start with a nonce read from stdin
before the candidate runs, so nothing the candidate prints can be mistaken for a result (this stops
accidents and naive fakes, not a program that deliberately inspects this harness).
"""
import ast
import contextlib
import io
import json
import signal
import sys

NONCE = sys.stdin.readline().strip()
sys.stdin = io.StringIO("")
OUT = sys.stdout
CANDIDATE, SETUP, TESTS, PER_TEST_S = __CANDIDATE__, __SETUP__, __TESTS__, __PER_TEST_S__
RUN_AT_LOAD = __RUN_AT_LOAD__  # False for stdin programs, which tests run whole via _run_stdin


class TestTimeout(Exception):
    pass


def on_alarm(signum, frame):
    raise TestTimeout(f"test took longer than {PER_TEST_S} s")


def emit(**record):
    OUT.write(NONCE + json.dumps(record) + "\n")
    OUT.flush()


def short(value, limit=300):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def run_test(source, namespace):
    """Run one test snippet; when it ends in ``assert a == b`` report both sides."""
    body = ast.parse(source).body
    last = body[-1] if body else None
    compare = (isinstance(last, ast.Assert) and isinstance(last.test, ast.Compare)
               and len(last.test.ops) == 1 and isinstance(last.test.ops[0], ast.Eq))
    if not compare:
        exec(compile(source, "<test>", "exec"), namespace)
        return {"passed": True}
    exec(compile(ast.Module(body=body[:-1], type_ignores=[]), "<test>", "exec"), namespace)
    actual = eval(compile(ast.Expression(last.test.left), "<test>", "eval"), namespace)
    expected = eval(compile(ast.Expression(last.test.comparators[0]), "<test>", "eval"), namespace)
    return {"passed": bool(actual == expected), "actual": short(actual), "expected": short(expected)}


def error_text(exc):
    return f"{type(exc).__name__}: {exc}"[:500]


signal.signal(signal.SIGALRM, on_alarm)
namespace = {"__name__": "__candidate__", "__candidate_source__": CANDIDATE}
exec("from typing import *", namespace)  # LeetCode-style signatures use List[int] unimported
try:
    with contextlib.redirect_stdout(io.StringIO()):
        signal.setitimer(signal.ITIMER_REAL, PER_TEST_S)
        code = compile(CANDIDATE, "<candidate>", "exec")
        if RUN_AT_LOAD:
            exec(code, namespace)
        exec(compile(SETUP, "<setup>", "exec"), namespace)
        signal.setitimer(signal.ITIMER_REAL, 0)
    emit(kind="load", ok=True)
except BaseException as exc:  # the candidate may raise anything, SystemExit included
    signal.setitimer(signal.ITIMER_REAL, 0)
    emit(kind="load", ok=False, error=error_text(exc))
    sys.exit(0)
for index, test in enumerate(TESTS):
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            signal.setitimer(signal.ITIMER_REAL, PER_TEST_S)
            result = run_test(test, namespace)
            signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        result = {"passed": False, "error": error_text(exc)}
    emit(kind="test", index=index, **result)
