"""The base student's pretraining corpus never shows feedback: no teacher sentence, no judgement of an answer,
no correction. The base must be a fluent chat model that has never seen feedback, so that whatever it makes
of feedback is what SML changes (paper premise)."""

import re
from pathlib import Path

import pytest

from sml import settings
from sml.dialogue.environment import TeacherView
from sml.dialogue.teacher import ScriptedTeacher
from sml.tasks import toy_code, toy_math
from sml.train import pretrain

REPO = Path(__file__).resolve().parents[1]
# words that judge or correct an earlier answer, whoever says them
JUDGEMENT = re.compile(r"\b(not right|incorrect|wrong|correct|mistake|try again|well done|good job|too (high|low)|"
                       r"should (be|return)|check your work|is not \S+\.)", re.IGNORECASE)


def teacher_sentences() -> set[str]:
    """The fixed openings of every sentence the scripted teacher writes (up to its first number or code),
    from its replies to wrong answers, questions and other turns in both domains."""
    math = toy_math.generate(20, 1, min_digits=1, max_digits=1)
    code = toy_code.generate(20, 1)
    teacher, openings = ScriptedTeacher(), set()
    for task in math + code:
        wrong = ("1 + 1 = 3\n3 * 2 = 7\nThe answer is 7." if task["domain"] == "math"
                 else "```python\ndef f(x):\n    return 0\n```")
        check = ({"extracted": "7", "passed": False} if task["domain"] == "math" else
                 {"n_passed": 0, "n_tests": 1, "results": [{"test": task["tests"][0], "passed": False, "actual": 0,
                                                            "expected": 1}]})
        for label, text in (("attempt", wrong), ("question", "What is step 1?"), ("other", "Hello.")):
            view = TeacherView(task=task, variant="full", label=label, check=check if label == "attempt" else None,
                               messages=[{"role": "user", "content": task["prompt"]},
                                         {"role": "assistant", "content": text}])
            for sentence in re.split(r"(?<=[.?!])\s+", teacher.reply(view)):
                opening = re.split(r"[\d`(=]", sentence)[0].strip()
                if len(opening.split()) >= 2:
                    openings.add(opening)
    return openings


@pytest.fixture(scope="module")
def built():
    cfg = settings.load(REPO / "params.yaml")
    return pretrain.corpus(300, seed=0, tasks_params=cfg.tasks.model_dump(), exclude=set())


def test_the_teacher_sentences_are_found():
    """The check below is only as good as this list: it must hold the teacher's feedback openings."""
    openings = teacher_sentences()
    assert {"That is not right.", "Check your work:", "Your function is not right."} <= openings, openings
    assert any(o.startswith("Hint: step") for o in openings) and any(o.startswith("It passes") for o in openings)


def test_the_corpus_never_shows_feedback(built):
    openings = teacher_sentences()
    for chat in built["messages"]:
        for i, message in enumerate(chat):
            said = [o for o in openings if o in message["content"]]
            assert not said, f"a teacher sentence in the corpus: {said[0]!r} in {message['content']!r}"
            if message["role"] == "user" and i > 0 and chat[i - 1]["role"] == "assistant":
                assert not JUDGEMENT.search(message["content"]), f"a judgement of an answer: {message['content']!r}"
            if message["role"] == "assistant":
                assert not JUDGEMENT.search(message["content"]), f"a correction by the assistant: {message['content']!r}"
