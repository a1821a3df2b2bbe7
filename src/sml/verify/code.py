"""Code verifier: extract the student's code, run the hidden tests in the sandbox, report each test.

The per-test report (pass/fail, expected vs actual, error) is the teacher's *dynamic* private
knowledge for code tasks.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from .. import sandbox

_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_HARNESS = (Path(__file__).parent / "harness.py").read_text()


def extract_code(text: str) -> str:
    """The code in a reply: the last fenced block if any, else from the first ``def``/``import``, else all."""
    blocks = [b for b in _FENCE.findall(text) if b.strip()]
    if blocks:
        return blocks[-1].strip("\n") + "\n"
    match = re.search(r"^(?:import |from )|(?:^|(?<=\s))(?:def \w+\s*\(|class \w+)", text, re.MULTILINE)
    return (text[match.start():] if match else text).strip("\n") + "\n"


def harness_program(code: str, tests: list[str], setup: str = "", per_test_s: float = 2.0,
                    entry_point: str = "") -> str:
    """The full sandboxed program that runs ``code`` and then each test. For ``entry_point ==
    "__main__"`` (a stdin program) the code is only compiled at load; the tests run it."""
    values = {"__CANDIDATE__": repr(code), "__SETUP__": repr(setup), "__TESTS__": repr(list(tests)),
              "__PER_TEST_S__": repr(float(per_test_s)), "__RUN_AT_LOAD__": repr(entry_point != "__main__")}
    return re.sub("|".join(values), lambda m: values[m.group(0)], _HARNESS)


def run_tests(code: str, tests: list[str], setup: str = "", timeout_s: float = 10.0, memory_mb: int = 512,
              per_test_s: float = 2.0, entry_point: str = "", runner: Callable[..., dict] | None = None) -> dict:
    """Run ``tests`` against ``code`` in the sandbox: ``runner`` (default ``sandbox.run``; a
    ``sandbox.Pool``'s ``run`` is the fast alternative with the same results).

    Returns ``passed`` (all tests passed), ``n_passed``, ``n_tests``, ``results`` (one dict per test:
    ``test``, ``passed``, and ``expected``/``actual``/``error`` where known), ``load_error`` (the code
    did not even run: syntax error, exception at import) and the sandbox ``status``.
    """
    nonce = secrets.token_hex(16)
    run = (runner or sandbox.run)(harness_program(code, tests, setup, per_test_s, entry_point), timeout_s=timeout_s,
                                  memory_mb=memory_mb, stdin=nonce + "\n")
    records = []
    for line in run["stdout"].splitlines():
        if line.startswith(nonce):
            try:
                records.append(json.loads(line[len(nonce):]))
            except json.JSONDecodeError:
                continue
    load = next((r for r in records if r.get("kind") == "load"), None)
    by_index = {r["index"]: r for r in records if r.get("kind") == "test"}
    if load is None:
        load_error = f"the program did not run ({run['status']}): {run['stderr'][-300:]}".strip()
    else:
        load_error = None if load["ok"] else load["error"]
    results = []
    for i, test in enumerate(tests):
        record = by_index.get(i)
        if record is None:
            reason = load_error or f"not run: the program stopped early ({run['status']})"
            results.append({"test": test, "passed": False, "error": reason})
        else:
            results.append({"test": test, **{k: v for k, v in record.items() if k not in ("kind", "index")}})
    n_passed = sum(r["passed"] for r in results)
    return {"passed": bool(tests) and n_passed == len(tests), "n_passed": n_passed, "n_tests": len(tests),
            "results": results, "load_error": load_error, "status": run["status"]}


def verify(task: dict, reply: str, **kwargs) -> dict:
    """Check a student's reply to a code task; ``kwargs`` go to ``run_tests``."""
    code = extract_code(reply)
    return {"code": code, **run_tests(code, task["tests"], task["test_setup"], entry_point=task["entry_point"], **kwargs)}
