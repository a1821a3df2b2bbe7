"""The teacher: sees the task, its private knowledge and the public dialogue; writes the next message.

The environment (``sml.dialogue.environment``) judges every student turn first: it labels it (answer
attempt, question, other), runs the verifier on attempts and decides which shard, if any, this reply
must reveal. A teacher only turns that judgement (a ``TeacherView``) into words, so every teacher
backend (scripted here, LLM in ``sml.dialogue.llm_teacher``) gives feedback grounded in the same facts.

The scripted teacher is the default: deterministic, local, free, and it never states the final
answer unless ``reveal_answer`` is set (it drops any part of a reply that the leak audit flags).
"""

from __future__ import annotations

import re
from fractions import Fraction

from sml import settings
from sml.dialogue.environment import EQUATION as _EQUATION  # noqa: F401 (qprime reads it from here)
from sml.dialogue.environment import STEP_REF, TeacherView, leaks
from sml.tasks.schema import metadata, prompt_for
from sml.tasks.toy_math import format_number, steps_of
from sml.verify.math import parse_number

_TEST_CALL = re.compile(r"assert\s+(.+?)\s*==", re.DOTALL)


def parse_feedback_kinds(kinds: str | list[str]) -> list[str]:
    """``"verdict,step"`` -> ``["verdict", "step"]`` (the kinds ``settings.FEEDBACK`` allows)."""
    return [k.strip() for k in kinds.split(",") if k.strip()] if isinstance(kinds, str) else list(kinds)


# --- what a teacher sees ------------------------------------------------------------------------------

def private_knowledge(view: TeacherView) -> str:
    """The teacher's privileged information as plain text (what an LLM teacher is prompted with)."""
    task = view.task
    parts = []
    if task["domain"] == "math":
        parts.append(f"The correct final answer is {task['answer']}.")
        if task["solution"]:
            parts.append(f"Reference solution:\n{task['solution']}")
    else:
        parts.append(f"Reference solution:\n```python\n{task['solution'].strip()}\n```")
        if view.check is not None:
            parts.append("Results of the hidden unit tests on the student's latest code:\n" + test_report(view.check))
    if view.variant == "sharded" and task["shards"]:
        parts.append("The full problem, which the student has only partly seen:\n" + task["prompt"])
    return "\n\n".join(parts)


def test_report(check: dict, limit: int = 10) -> str:
    """One line per test: ``PASS``/``FAIL`` with expected vs actual, or the error."""
    if check.get("load_error"):
        return f"The code did not run: {check['load_error']}"
    lines = []
    for r in check["results"][:limit]:
        if r["passed"]:
            lines.append(f"PASS {r['test']}")
        elif "actual" in r:
            lines.append(f"FAIL {r['test']} (got {r['actual']}, expected {r.get('expected')})")
        else:
            lines.append(f"FAIL {r['test']} ({r.get('error', 'failed')})")
    return "\n".join(lines)


class Teacher:
    """The interface every teacher backend implements (two methods, no framework)."""

    def open(self, task: dict, variant: str) -> str:
        """The first message of a dialogue: the problem (``full``) or its intent (``sharded``)."""
        return prompt_for(task, variant)

    def reply(self, view: TeacherView) -> str:
        raise NotImplementedError

    def reply_batch(self, views: list[TeacherView]) -> list[str]:
        """Replies for many dialogues at once; backends that can batch override this."""
        return [self.reply(v) for v in views]


# --- the scripted teacher ------------------------------------------------------------------------------

class ScriptedTeacher(Teacher):
    """Rule-based feedback grounded in the verifier, in the kinds chosen by ``feedback``:

    - ``verdict``: the attempt is wrong;
    - ``direction`` (math): the answer is too high or too low;
    - ``step`` (math): the first wrong equation in the student's work, corrected where that does not
      give the answer away, else the next intermediate step of the reference solution;
    - ``tests`` (code): how many hidden tests pass and the first failing one, expected vs actual.

    A located wrong equation and a failing test with expected vs actual are the concrete errors a reply
    names (``TeacherView.named``), unless the leak filter drops the sentence that names them.

    With ``restate`` (a world choice, off by default), every reply on the full problem ends by stating the
    problem again, as a tutor might: the numbers sit in the latest message, so a tiny student needs no
    retrieval across messages to try again (the paper's instruct models have that retrieval for free).
    Never on sharded tasks, where it would reveal shards not yet asked for.

    Questions are answered from the private knowledge: the requested shard on sharded tasks, else the
    step asked for ("what is step 2?") or the next intermediate step (math), and the test of the call
    asked about ("what should f(3) return?") or the next hidden test (code). No answer ever gives the
    final step's value away.
    """

    def __init__(self, feedback: str | list[str] = settings.FEEDBACK, reveal_answer: bool = False,
                 restate: bool = False):
        self.feedback = parse_feedback_kinds(feedback)
        self.reveal_answer = reveal_answer
        self.restate = restate

    def reply(self, view: TeacherView) -> str:
        task = view.task
        if view.label == "attempt":
            parts = self._math_feedback(view) if task["domain"] == "math" else self._code_feedback(view)
        elif view.label == "question":
            parts = [] if view.reveal else [self._answer_question(view)]
        else:
            parts = ["Please give your answer: show your steps and end with 'The answer is ...'."
                     if task["domain"] == "math" else "Please write the function in a Python code block."]
        if view.reveal:
            parts.append(f"Here is more information. {view.reveal}")
        if self.restate and view.variant == "full":
            parts.append(task["prompt"])  # the task's own statement: never a leak (see environment.leaks)
        safe = [p for p in parts if self.reveal_answer or not leaks(p, task)]
        if view.named is not None and view.named["said"] not in safe:
            view.named = None
        if self.reveal_answer and view.label == "attempt" and task["domain"] == "math" and view.turn >= 3:
            safe.append(f"The answer is {task['answer']}.")
        return " ".join(safe) or "Not quite. Try again."

    # math -------------------------------------------------------------------------------------
    def _reference_steps(self, task: dict) -> list[dict]:
        expression = metadata(task).get("expression")
        return steps_of(expression) if expression else []

    def _next_hint(self, view: TeacherView, k: int | None = None) -> str:
        """Reference step ``k`` (1-based; default: the next one not told yet), unless it is the answer."""
        steps = self._reference_steps(view.task)[:-1]  # the last step's value is the answer
        k = k or view.hints_given + 1
        if k <= len(steps):
            view.hinted = True
            return f"Hint: step {k} is {steps[k - 1]['equation']}."
        return ""

    def _math_feedback(self, view: TeacherView) -> list[str]:
        task, check = view.task, view.check or {}
        parts = []
        if "verdict" in self.feedback:
            parts.append("That is not right.")
        said, gold = parse_number(check.get("extracted") or ""), parse_number(task["answer"])
        if "direction" in self.feedback and said is not None and gold is not None and said != gold:
            parts.append(f"Your answer {check['extracted']} is too {'high' if said > gold else 'low'}.")
        if "step" in self.feedback:
            located, view.named = self._first_wrong_equation(view.messages[-1]["content"], task)
            parts.append(located or self._next_hint(view))
        return [p for p in parts if p] or ["That is not right."]

    def _first_wrong_equation(self, text: str, task: dict) -> tuple[str, dict | None]:
        """Where the student's work first goes wrong, as one statement worded so that it does not give the
        answer away, and the error it names (``TeacherView.named``). An operand or the student's own number
        can equal the answer ("0 - 1 is not 0" when the answer is 0), and so can the corrected value: then
        the step is named by its index, or the value is left out; never half a statement."""
        for k, match in enumerate(_EQUATION.finditer(text), start=1):
            if match.group(2):
                a, op, b, c = Fraction(match.group(1)), match.group(2), Fraction(match.group(3)), Fraction(match.group(4))
                if op == "/" and b == 0:
                    return f"In '{match.group(0)}' you divide by zero.", None
                right = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]  # the dict is built for every op
                shown = f"{match.group(1)} {op} {match.group(3)}"
            else:
                c, right, shown = Fraction(match.group(6)), -Fraction(match.group(5)), f"-({match.group(5)})"
            if right != c:
                value, wrong = format_number(right), match.group(4) or match.group(6)
                wordings = (f"Check your work: {shown} is not {wrong}. It is {value}.",
                            f"Check your work: step {k} should be {value}.",
                            f"Check your work: {shown} is not {wrong}.",
                            f"Check your work: step {k} is not right.")  # "step k" never counts as a leak
                said = next(w for w in wordings if self.reveal_answer or not leaks(w, task))
                return said, {"step": k, "value": value, "said": said}
        return "", None

    # code -------------------------------------------------------------------------------------
    def _code_feedback(self, view: TeacherView) -> list[str]:
        check = view.check or {}
        parts = ["Your function is not right."] if "verdict" in self.feedback else []
        if "tests" in self.feedback:
            if check.get("load_error"):
                error = check["load_error"].strip().splitlines()[-1] if check["load_error"].strip() else "it failed"
                parts.append(f"Your code does not run: {error[:200]}")
            else:
                failing = [r for r in check.get("results", []) if not r["passed"]]
                parts.append(f"It passes {check.get('n_passed', 0)} of {check.get('n_tests', 0)} tests.")
                if failing:
                    parts.append(self._describe_failure(failing[0]))
                    if "actual" in failing[0]:
                        view.named = {"test": failing[0]["test"], "said": parts[-1]}
        return parts or ["Your function is not right."]

    @staticmethod
    def _describe_failure(result: dict) -> str:
        call = re.match(r"assert\s+(.+?)\s*==\s*(.+)$", result["test"].strip(), re.DOTALL)
        what = call.group(1) if call else result["test"].strip()
        if "actual" in result:
            return f"{what} returned {result['actual']} but should return {result.get('expected')}."
        return f"{what} failed: {str(result.get('error', 'error'))[:200]}"

    def _answer_question(self, view: TeacherView) -> str:
        task, question = view.task, view.messages[-1]["content"]
        if task["domain"] == "math":
            asked = STEP_REF.search(question)
            return (self._next_hint(view, int(asked.group(1)) if asked else None)
                    or "I can't tell you the answer, but you have everything you need.")
        tests = task["tests"]
        about = [t for t in tests if (call := _TEST_CALL.match(t.strip())) and call.group(1) in question]
        test = about[0] if about else tests[view.hints_given % len(tests)]
        view.hinted = True
        return f"Here is one of the tests: {test}"
