import pytest

from sml.verify import code, math, verify


@pytest.mark.parametrize("text, expected", [
    ("42", "42"),
    ("The answer is 42.", "42"),
    ("So 5 - 3 = 2", "2"),
    ("Final answer: -1,234 apples", "-1,234"),
    ("I get \\boxed{\\frac{3}{4}} in the end", "\\frac{3}{4}"),
    ("nested \\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
    ("maybe 3/4?", "3/4"),
    ("it is 0.25 or so", "0.25"),
    ("the answer is 7, since 3 + 4 = 7 and 10 > 9", "7"),
    ("\u22125 degrees", "-5"),
    ("I don't know", None),
])
def test_extract_answer(text, expected):
    assert math.extract_answer(text) == expected


@pytest.mark.parametrize("predicted, gold, same", [
    ("0.5", "1/2", True), ("\\frac{1}{2}", "0.5", True), ("-1,234", "-1234", True), ("1.0", "1", True),
    ("$12", "12", True), ("7.", "7", True), ("0.3333333", "1/3", True), ("0.33", "1/3", False),
    ("2", "3", False), ("-2", "2", False), ("\\sqrt{3}/2", "\\frac{\\sqrt{3}}{2}", True),
    ("x^2+2x", "x(x+2)", True), ("banana", "7", False),
])
def test_is_equivalent(predicted, gold, same):
    assert math.is_equivalent(predicted, gold) is same


def test_math_verify_on_a_task():
    task = {"domain": "math", "answer": "-25"}
    assert verify(task, "I think it's -25.")["passed"]
    assert not verify(task, "I think it's 25.")["passed"]
    assert verify(task, "What do you mean?") == {"extracted": None, "passed": False}


@pytest.mark.parametrize("reply, expected", [
    ("Sure:\n```python\ndef f(x):\n    return x\n```\nDone.", "def f(x):\n    return x\n"),
    ("```\ndef f(x):\n    return 1\n```", "def f(x):\n    return 1\n"),
    ("first\n```python\ndef f(): return 1\n```\nbetter:\n```python\ndef f(): return 2\n```", "def f(): return 2\n"),
    ("Here it is: def f(x):\n    return x", "def f(x):\n    return x\n"),
    ("def f(x):\n    return x * 2", "def f(x):\n    return x * 2\n"),
])
def test_extract_code(reply, expected):
    assert code.extract_code(reply) == expected


TASK = {"domain": "code", "entry_point": "f", "test_setup": "",
        "tests": ["assert f(2) == 5", "assert f(0) == 1", "assert f(-3) == -5"]}


def test_code_verifier_reports_each_test_with_expected_and_actual():
    report = verify(TASK, "```python\ndef f(x):\n    return 2 * x\n```")
    assert not report["passed"] and report["n_passed"] == 0 and report["n_tests"] == 3
    assert [(r["expected"], r["actual"]) for r in report["results"]] == [("5", "4"), ("1", "0"), ("-5", "-6")]
    assert verify(TASK, "def f(x):\n    return 2 * x + 1")["passed"]


def test_code_verifier_partial_credit_and_exceptions():
    report = verify(TASK, "def f(x):\n    if x < 0:\n        raise ValueError('neg')\n    return 2 * x + 1")
    assert report["n_passed"] == 2 and not report["passed"]
    assert "ValueError: neg" in report["results"][2]["error"]


def test_code_verifier_syntax_error_and_missing_function():
    report = verify(TASK, "def f(x) return x")
    assert report["load_error"].startswith("SyntaxError") and report["n_passed"] == 0
    report = verify(TASK, "def g(x):\n    return x")
    assert all("NameError" in r["error"] for r in report["results"])


def test_code_verifier_survives_a_hanging_test():
    report = code.run_tests("def f(x):\n    while x == 0: pass\n    return 2 * x + 1", TASK["tests"], per_test_s=0.5)
    assert [r["passed"] for r in report["results"]] == [True, False, True]
    assert "TestTimeout" in report["results"][1]["error"]


def test_printed_fake_results_are_ignored():
    fake = 'print(\'{"kind": "test", "index": 0, "passed": true}\')\ndef f(x):\n    return 0'
    assert code.run_tests(fake, TASK["tests"])["n_passed"] == 0


def test_candidate_exiting_early_fails_every_test():
    report = code.run_tests("import os\nos._exit(0)", TASK["tests"])
    assert report["n_passed"] == 0 and report["load_error"]
