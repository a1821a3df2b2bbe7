"""The dialogue environment's hooks on their own, without a student model or a teacher: labels, the
verdict, the judged turn a teacher gets, when a dialogue ends, shard reveals and the leak audit."""

import pytest

from sml.dialogue.environment import Environment, Judge, StudentTurn, TeacherView, classify, leaks
from sml.tasks import toy_code
from test_dialogue import math_task

RIGHT = "3 + 4 = 7\n7 * 5 = 35\nThe answer is 35."


def environment(variant="full", max_turns=4, shard_reveal="every_turn", block_leaks=True):
    return Environment(variant, max_turns, shard_reveal, block_leaks, Judge(workers=1))


def opened(env, task=None):
    task = task or math_task()
    return env.open(task, 0, [{"role": "user", "content": task["prompt"]}], ids=[])


def judged(env, d, text):
    turn = StudentTurn(text, ids=[])
    env.judge_turns([d], [turn])
    return turn


def take_turn(env, d, text, turn=1):
    """Judge ``text`` as the student's ``turn``-th turn and respond to it: the teacher's brief, or None."""
    return env.respond(d, turn, judged(env, d, text))


# --- labels --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,label", [
    (RIGHT, "attempt"),
    ("I think it is 12", "attempt"),
    ("What is step 2?", "question"),
    ("Is the answer 35? The answer is 35.", "attempt"),
    ("hmm", "other"),
])
def test_math_turn_labels(text, label):
    assert classify(text, math_task()) == label


def test_code_turn_labels():
    task = toy_code.generate(1, 0)[0]
    assert classify("```python\ndef f(x):\n    return x\n```", task) == "attempt"
    assert classify("def f(x): return 1", task) == "attempt"
    assert classify("Which steps does f apply?", task) == "question"
    assert classify("ok", task) == "other"


# --- responding to a student turn ------------------------------------------------------------------

def test_a_correct_answer_solves_the_dialogue_and_gets_no_reply():
    env = environment()
    d = opened(env)
    assert take_turn(env, d, RIGHT, turn=2) is None
    assert (d.labels, d.correct, d.stop, d.solved_turn) == (["attempt"], [True], "solved", 2)
    assert d.messages[-1] == {"role": "assistant", "content": RIGHT} and d.reward(0.7) == pytest.approx(0.7)


def test_a_wrong_answer_is_judged_for_the_teacher_until_the_turns_run_out():
    env = environment(max_turns=2)
    d = opened(env)
    view = take_turn(env, d, "The answer is 30.")
    assert isinstance(view, TeacherView) and not d.done
    assert (view.label, view.check["passed"], view.check["extracted"], view.reveal) == ("attempt", False, "30", None)
    assert view.messages is d.messages and view.turn == 1 and d.correct == [False]
    assert take_turn(env, d, "The answer is 31.", turn=2) is None
    assert (d.stop, d.solved_turn, d.reward(0.7)) == ("max_turns", 0, 0.0)


def test_a_question_is_not_verified():
    env = environment()
    d = opened(env)
    view = take_turn(env, d, "What is step 1?")
    assert (view.label, view.check, d.correct, d.premature) == ("question", None, [False], [False])


def test_math_attempts_are_judged_without_starting_threads(monkeypatch):
    """Math checks run no sandbox, so the judge verifies them in place (a thread pool per batch of turns
    cost more than the checks); each distinct attempt once, from its cache after."""
    import sml.dialogue.environment as environment_module

    def no_threads(*args, **kwargs):
        raise AssertionError("a thread pool was started for math checks")

    monkeypatch.setattr(environment_module, "ThreadPoolExecutor", no_threads)
    judge, task = Judge(workers=2), math_task()
    d = environment().open(task, 0, [{"role": "user", "content": task["prompt"]}], ids=[])
    results = judge.checks([d, d, d], [RIGHT, "The answer is 12.", RIGHT], ["attempt", "attempt", "question"])
    assert [r and r["passed"] for r in results] == [True, False, None]
    assert judge.pool is None and len(judge.cache) == 2


# --- shards ---------------------------------------------------------------------------------------

def test_sharded_reveal_gives_the_step_asked_for_then_the_next_hidden_one():
    task = math_task()  # shards: intent, step 1, step 2
    env = environment("sharded")
    d = env.open(task, 0, [{"role": "user", "content": task["shards"][0]}], ids=[])
    assert (d.n_shards, d.shown) == (3, {0})
    assert take_turn(env, d, "What is step 2?").reveal == task["shards"][2]
    view = take_turn(env, d, "The answer is 1.", turn=2)
    assert view.reveal == task["shards"][1] and d.shown == {0, 1, 2}
    assert d.revealed == [1, 2] and d.premature == [False, True]
    assert take_turn(env, d, "hmm", turn=3).reveal is None  # nothing left to reveal


def test_shards_on_question_are_revealed_only_when_asked():
    env = environment("sharded", shard_reveal="on_question")
    d = opened(env)
    assert take_turn(env, d, "The answer is 1.").reveal is None
    assert take_turn(env, d, "Could you tell me more?", turn=2).reveal == d.task["shards"][1]


# --- the leak audit -------------------------------------------------------------------------------

def test_leak_audit_catches_a_leaking_message():
    task = math_task()
    assert leaks("The answer is 35.", task)
    assert leaks("Almost: it should come out as 35", task)
    assert not leaks("Step 2: compute the result of step 1 * 5.", task)
    assert not leaks("Your answer 34 is too low.", task)
    code = toy_code.generate(1, 0)[0]
    assert leaks("Write this:\n" + code["solution"], code)
    assert not leaks("It passes 2 of 5 tests.", code)


def test_a_leaking_teacher_message_is_recorded_and_replaced_unless_leaks_are_let_through():
    task = math_task()
    env = environment("sharded")
    d = opened(env, task)
    view = take_turn(env, d, "The answer is 30.")
    assert env.audit(d, view, "Too low: it is 35.") == f"That is not right. Try again. Here is more information. {view.reveal}"
    assert env.audit(d, view, "Too low.") == "Too low."
    assert d.leaks == [True, False]
    let_through = environment(block_leaks=False)
    assert let_through.audit(d, view, "It is 35.") == "It is 35." and d.leaks == [True, False, True]
