"""teacher.restate (a world choice): the scripted teacher ends each reply on the full problem with the problem
itself, which the leak audit never counts as a leak; never on sharded tasks (it would reveal unasked shards)."""

import pytest
import sections

from sml.dialogue.environment import TeacherView, leaks
from sml.dialogue.llm_teacher import make_teacher
from sml.dialogue.teacher import ScriptedTeacher
from sml.tasks import toy_code, toy_math


def view(task, variant, label="attempt"):
    wrong = "1 + 1 = 3\nThe answer is 3." if task["domain"] == "math" else "```python\ndef f(x):\n    return 0\n```"
    check = ({"extracted": "3", "passed": False} if task["domain"] == "math" else
             {"n_passed": 0, "n_tests": 1, "results": [{"test": task["tests"][0], "passed": False, "actual": 0,
                                                        "expected": 1}]})
    return TeacherView(task=task, variant=variant, label=label, check=check if label == "attempt" else None,
                       messages=[{"role": "user", "content": task["prompt"]}, {"role": "assistant", "content": wrong}])


@pytest.mark.parametrize("task", toy_math.generate(20, 0, min_digits=1, max_digits=1) + toy_code.generate(10, 0))
def test_a_restating_teacher_ends_with_the_problem_and_never_leaks(task):
    plain, restating = ScriptedTeacher(), ScriptedTeacher(restate=True)
    for label in ("attempt", "other"):
        said = restating.reply(view(task, "full", label))
        assert said.endswith(task["prompt"]) and said.startswith(plain.reply(view(task, "full", label)))
        assert not leaks(said, task)
    assert task["prompt"] not in restating.reply(view(task, "sharded"))


def test_the_setting_reaches_the_scripted_teacher():
    assert make_teacher(sections.teacher(restate=True)).restate and not make_teacher(sections.teacher()).restate
