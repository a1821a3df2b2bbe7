"""The base calibration (issue 21): per domain on held-out tasks, SR@1, the share of turns after feedback that
are well formed, and whether feedback leaves the base below a fresh retry, measured on a scripted student whose
every number is known by hand."""

import json
from collections import Counter

import pytest
import sections

from sml.dialogue.teacher import ScriptedTeacher
from sml.evaluation import calibration
from sml.tasks import toy_math
from tiny_models import ReplayStudent, tiny_model, tiny_tokenizer


def scripted_student(tasks):
    """Task 0: solved at once. The others: at turn 1 right only on every third sight of the prompt. The
    dialogue's turn 1 comes first (calibration runs the dialogues, then the retries) and fails; of the three
    fresh retries after it, the second solves it. After feedback, task 1 says something that is no answer,
    tasks 2 and 3 a well-formed wrong answer."""
    seen = Counter()

    def script(prompt):
        task = next(t for t in tasks if t["prompt"] in prompt)
        if prompt.count("<|im_start|>user") > 1:
            return "I do not know." if task is tasks[1] else "1 + 1 = 2\nThe answer is 999999."
        seen[task["id"]] += 1
        right = task is tasks[0] or seen[task["id"]] % 3 == 0
        return task["solution"] if right else "1 + 1 = 2\nThe answer is 999999."

    tok = tiny_tokenizer()
    return ReplayStudent(tok, tiny_model(tok), script)


def test_calibration_counts_what_the_base_does_after_feedback():
    tasks = toy_math.generate(4, 0, min_digits=1, max_digits=1)
    scores, data = calibration.calibrate(scripted_student(tasks), ScriptedTeacher(), tasks,
                                         sections.dialogue(eval_turns=3, max_new_tokens=32), domain="math", seed=0,
                                         progress=False)
    assert list(data["solved_turn"]) == [1, 0, 0, 0]
    assert scores["sr1_math"] == 0.25 and scores["sr1_math_n"] == 4 and scores["sr3_math"] == 0.25
    assert scores["sr1_math_low"] < 0.25 < scores["sr1_math_high"]
    assert scores["well_formed_after_feedback_math"] == pytest.approx(4 / 6)  # 3 dialogues x turns 2-3
    assert scores["well_formed_after_feedback_math_n"] == 6 and scores["well_formed_first_turn_math"] == 1.0
    assert scores["solve_rate_after_feedback_math"] == 0.0 and scores["solve_rate_after_feedback_math_n"] == 6
    assert scores["solve_rate_after_retry_math"] == 1.0 and scores["solve_rate_after_retry_math_n"] == 3
    assert scores["sr1_ok_math"] is True and scores["well_formed_ok_math"] is False
    assert scores["feedback_below_retry_math"] is True


@pytest.mark.parametrize("sr1, formed, ok", [(0.2, 0.9, (True, True)), (0.6, 1.0, (True, True)),
                                             (0.19, 0.95, (False, True)), (0.61, 0.89, (False, False))])
def test_the_criteria_are_the_fixed_ones(sr1, formed, ok):
    scores = {"sr1_code": sr1, "well_formed_after_feedback_code": formed, "solve_rate_after_feedback_code": 0.1,
              "solve_rate_after_retry_code": 0.1}
    verdict = calibration.criteria(scores, "code")
    assert (verdict["sr1_ok_code"], verdict["well_formed_ok_code"]) == ok
    assert verdict["feedback_below_retry_code"] is False  # equal is not below


def test_solves_are_counted_by_task_kind():
    from types import SimpleNamespace
    task = lambda family, steps: {"metadata": json.dumps({"family": family, "steps": steps})}
    dialogues = [SimpleNamespace(task=task("int", 2), solved_turn=1), SimpleNamespace(task=task("int", 2), solved_turn=0),
                 SimpleNamespace(task=task("int", 2), solved_turn=2), SimpleNamespace(task=task("list", 1), solved_turn=1)]
    assert calibration.solved_by_kind(dialogues) == {("int", 2): (1, 3), ("list", 1): (1, 1)}


def test_turns_after_feedback_are_counted_by_family_turn_and_signature():
    """Turn 1 is not after feedback; a program with another family's argument counts as another family's."""
    from types import SimpleNamespace
    def dialogue(family, replies, formed):
        messages = [m for r in replies for m in ({"role": "user", "content": "..."}, {"role": "assistant", "content": r})]
        return SimpleNamespace(task={"metadata": json.dumps({"family": family, "steps": 2})}, messages=messages,
                               well_formed=formed)
    ints = "```python\ndef f(x):\n    return x\n```"
    lists = "```python\ndef f(xs):\n    return len([v for v in xs if v > 1)\n```"
    dialogues = [dialogue("int", [lists, ints, lists], [False, True, False]),
                 dialogue("int", [ints, "Which number is k?"], [True, True]),
                 dialogue("list", [lists, lists], [False, False])]
    found = calibration.after_feedback_by_kind(dialogues)
    assert found["family"] == {"int": (2, 3), "list": (0, 1)}
    assert found["turn"] == {2: (2, 3), 3: (0, 1)}
    assert found["other_family"] == {"int": (1, 3), "list": (0, 1)}
