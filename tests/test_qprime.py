"""Q-priming: the injection schedule, the questions it injects, and how the engine and teacher use them."""

import math
import random

import pytest
import sections

from sml.train import qprime
from sml.evaluation import transcripts
from sml.dialogue.engine import run_dialogues
from sml.train.qprime import Injection, injection_probability, template_question
from sml.tasks import toy_code
from sml.dialogue.environment import TeacherView, classify, leaks
from sml.dialogue.teacher import ScriptedTeacher
from test_dialogue import math_task, model, replay, tok  # noqa: F401 (model, tok: shared fixtures)


@pytest.mark.parametrize("decay", [0.75, 0.5])
def test_injection_rate_follows_decay_to_the_turn(decay):
    """Over many failed turns the injected fraction at turn t is decay^t (within 4.5 binomial sigmas);
    a correct turn is never replaced."""
    injection, rng, n = Injection(decay=decay, source="template"), random.Random(0), 20000
    for turn in range(1, 5):
        chosen = injection.choose(turn, [None] * n, [False] * n, rng)
        p = injection_probability(turn, decay)
        assert p == decay ** turn
        assert abs(len(chosen) / n - p) < 4.5 * math.sqrt(p * (1 - p) / n)
        assert injection.choose(turn, [None] * 100, [True] * 100, rng) == []
    assert injection.counts["turns"] == 4 * n


def test_injection_is_reproducible():
    draws = lambda: Injection(decay=0.75, source="template").choose(1, [None] * 50, [False] * 50, random.Random(3))
    assert draws() == draws()


def test_math_question_asks_for_the_first_wrong_step_not_yet_told():
    task = math_task("( 3 + 4 ) * 5 - 2", "33")  # steps: 3 + 4 = 7, 7 * 5 = 35, 35 - 2 = 33
    assert template_question(task, "3 + 5 = 8\nThe answer is 38.", None) == "I am not sure about step 1. What is step 1?"
    assert template_question(task, "3 + 4 = 7\n7 * 5 = 30\nThe answer is 28.", None).endswith("What is step 2?")
    assert template_question(task, "3 + 5 = 8", None, told=1).endswith("What is step 2?")
    one_step = math_task("3 + 4", "7")
    for task in (task, one_step):
        question = template_question(task, "The answer is 9.", None)
        assert classify(question, task) == "question" and not leaks(question, task)


def test_code_question_asks_about_a_failing_test_not_yet_shown():
    task = toy_code.generate(1, 0)[0]
    results = [{"test": t, "passed": k == 0} for k, t in enumerate(task["tests"])]
    call = task["tests"][1].split("assert ")[1].split(" ==")[0]
    question = template_question(task, "```python\ndef f(x):\n    return x\n```", {"results": results})
    assert question == f"What should {call} return?"
    assert classify(question, task) == "question" and not leaks(question, task)
    shown = [{"role": "user", "content": f"Here is one of the tests: {task['tests'][1]}"}]
    assert call not in template_question(task, "", {"results": results}, shown)


def test_teacher_answers_the_question_asked():
    task = math_task("( 3 + 4 ) * 5 - 2", "33")
    view = lambda q: TeacherView(task=task, variant="full", label="question",
                                 messages=[{"role": "user", "content": task["prompt"]}, {"role": "assistant", "content": q}])
    assert ScriptedTeacher().reply(view("What is step 2?")) == "Hint: step 2 is 7 * 5 = 35."
    assert ScriptedTeacher().reply(view("Can you help?")) == "Hint: step 1 is 3 + 4 = 7."
    assert "33" not in ScriptedTeacher().reply(view("What is step 3?"))  # the last step is the answer
    code = toy_code.generate(1, 0)[0]
    call = code["tests"][2].split("assert ")[1].split(" ==")[0]
    reply = ScriptedTeacher().reply(TeacherView(task=code, variant="full", label="question", messages=[
        {"role": "user", "content": code["prompt"]}, {"role": "assistant", "content": f"What should {call} return?"}]))
    assert reply == f"Here is one of the tests: {code['tests'][2]}"


def test_engine_replaces_failed_turns_with_questions_and_keeps_ids_consistent(tok, model):
    """decay 1: every failed turn becomes the template question (labelled, not premature, no verifier);
    the token ids hold the question; the correct turn is kept; decay 0: the dialogue is untouched."""
    task = math_task("( 3 + 4 ) * 5 - 2", "33")
    right = "3 + 4 = 7\n7 * 5 = 35\n35 - 2 = 33\nThe answer is 33."
    student = replay(tok, model, ["The answer is 30.", "hmm", right])
    injection = Injection(decay=1.0, source="template")
    (d,) = run_dialogues([task], student, ScriptedTeacher(), sections.dialogue(), max_turns=3, inject=injection,
                         progress=False)
    assert d.injected == ["template", "template", ""] and d.labels == ["question", "question", "attempt"]
    assert d.solved_turn == 3 and d.premature == [False, False, False]
    assert d.messages[1]["content"] == "I am not sure about step 1. What is step 1?"
    assert d.messages[2]["content"] == "Hint: step 1 is 3 + 4 = 7."
    assert d.messages[3]["content"] == "I am not sure about step 2. What is step 2?"  # step 1 was told
    for k, start in enumerate(d.turn_starts):
        said = student.encode(d.messages[2 * k + 1]["content"])
        assert d.student_ids[k] == said and d.ids[start:start + len(said)] == said
    assert injection.counts == {"turns": 2, "injected": 2, "model": 0, "template": 2}
    assert transcripts.record(d, 0.7)["injected"] == d.injected
    (plain,) = run_dialogues([task], replay(tok, model, ["The answer is 30.", "hmm", right]), ScriptedTeacher(),
                             sections.dialogue(), max_turns=3, inject=Injection(decay=0.0, source="template"),
                             progress=False)
    assert plain.injected == ["", "", ""] and plain.labels == ["attempt", "other", "attempt"]


def test_a_model_question_that_is_no_question_falls_back_to_the_template(tok, model):
    """The tiny random student writes gibberish when asked for a question: each injected turn is then
    the template's question, labelled as such."""
    task = math_task()
    injection = Injection(decay=1.0, source="model", max_new_tokens=8)
    student = replay(tok, model, ["The answer is 30.", "The answer is 31."])
    student.generate = lambda prompts, *a, **k: [(student.encode("The answer is 12."), True) for _ in prompts]
    (d,) = run_dialogues([task], student, ScriptedTeacher(), sections.dialogue(), max_turns=2, inject=injection,
                         progress=False)
    assert d.injected == ["template", "template"]
    assert injection.counts["model"] == 0 and injection.counts["template"] == 2
    student.generate = lambda prompts, *a, **k: [(student.encode("Which step comes first?"), True) for _ in prompts]
    (d,) = run_dialogues([task], student, ScriptedTeacher(), sections.dialogue(), max_turns=2,
                         inject=Injection(decay=1.0, source="model"), progress=False)
    assert d.injected == ["model", "model"] and d.messages[1]["content"] == "Which step comes first?"


def test_the_question_prompt_gives_the_attempt_and_the_private_knowledge():
    task = math_task()
    view = TeacherView(task=task, variant="full", label="attempt", messages=[])
    (message,) = qprime.question_prompt(view, "The answer is 30.")
    assert "The answer is 30." in message["content"] and "The correct final answer is 35." in message["content"]
