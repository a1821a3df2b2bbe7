"""Does the student use the teacher's feedback? Well-formed turns, uptake of a named error, the chance of
solving after feedback against the chance of solving by independent retries: on hand-written dialogues
(a replay student), hand-built outcome lists and a scripted student for the retry comparator."""

from collections import defaultdict

import datasets
import pytest
import sections

from sml.dialogue.engine import run_dialogues
from sml.dialogue.teacher import ScriptedTeacher
from sml.evaluation import transcripts
from sml.evaluation.evaluate import evaluate, interval_rows, retry_comparator
from sml.tasks import toy_code
from test_behaviour import hand
from test_dialogue import math_task, model, replay, tok  # noqa: F401 (model, tok: shared fixtures)

RIGHT = "3 + 4 = 7\n7 * 5 = 35\nThe answer is 35."
WRONG_STEP_1 = "3 + 4 = 8\n8 * 5 = 40\nThe answer is 40."


def test_math_uptake_and_well_formed_turns_on_hand_written_dialogues(tok, model):
    """The teacher names the first wrong step with its right value; the next attempt fixes it when that
    step of its work now has the right value (or the attempt is right), and not when it is still wrong.
    A question after a named error is no attempt, so it does not count for uptake."""
    fixer = [WRONG_STEP_1, "3 + 4 = 7\n7 * 5 = 36\nThe answer is 36.", RIGHT]
    stuck = [WRONG_STEP_1, "3 + 4 = 9\n9 * 5 = 45\nThe answer is 45.", "What is step 1?", "I am lost."]
    (a,) = run_dialogues([math_task()], replay(tok, model, fixer), ScriptedTeacher(), sections.dialogue(), max_turns=4,
                         progress=False)
    (b,) = run_dialogues([math_task()], replay(tok, model, stuck), ScriptedTeacher(), sections.dialogue(), max_turns=4,
                         progress=False)
    # step 2's value is the answer: "It is 35." is dropped, "7 * 5 is not 36" still names the error
    assert a.named == ["step 1 = 7", "step 2 = 35"] and "35" not in a.messages[4]["content"]
    assert a.fixed == [False, True, True] and a.well_formed == [True, True, True] and a.solved_turn == 3
    assert b.named == ["step 1 = 7", "step 1 = 7", ""]  # the question gets a hint, which names no error
    assert b.fixed == [False, False, False, False] and b.well_formed == [True, True, True, False]
    data = transcripts.to_dataset([a, b], 0.7)
    assert data[0]["named"] == a.named and data[1]["fixed"] == b.fixed
    use = transcripts.feedback_use(data)
    assert use["well_formed_rate"] == pytest.approx(6 / 7)
    assert use["feedback_uptake_rate"] == pytest.approx(2 / 3)  # a: turns 2, 3 fixed; b: turn 2 not
    assert use["solve_rate_after_feedback"] == pytest.approx(1 / 5)  # a: solved at 3 (2 later turns); b: 3 later turns
    assert use["solve_rate_after_retry"] == 0.0  # no retries given


def test_a_blocked_reply_names_no_error(tok, model):
    (d,) = run_dialogues([math_task()], replay(tok, model, ["3 + 4 = 7\n7 * 5 = 36\nThe answer is 36."] * 2),
                         ScriptedTeacher(reveal_answer=True), sections.dialogue(), max_turns=2, progress=False)
    assert d.leaks == [True] and d.named == [""] and d.fixed == [False, False]


def test_code_uptake_and_well_formed_turns_on_hand_written_dialogues(tok, model):
    """The teacher names the first failing test with expected vs actual; the next attempt fixes it when
    that test passes (even if others still fail); code that does not load is no well-formed attempt."""
    task = toy_code.generate(1, 0)[0]  # f(s): replace 'b' with 'c', then upper case
    assert task["tests"][:3] == ["assert f('ecabd') == 'ECACD'", "assert f('adededf') == 'ADEDEDF'",
                                 "assert f('dbaebbbe') == 'DCAECCCE'"]
    turns = ["```python\ndef f(s):\n    return s.upper()\n```",
             "```python\ndef f(s):\n    return 'ECACD' if s == 'ecabd' else s.upper()\n```",
             "```python\ndef f(s):\n    return s.upper(\n```",
             "What should f('b') return?"]
    (d,) = run_dialogues([task], replay(tok, model, turns), ScriptedTeacher(), sections.dialogue(), max_turns=4,
                         progress=False)
    assert d.labels == ["attempt", "attempt", "attempt", "question"] and not d.solved_turn
    assert d.named == [task["tests"][0], task["tests"][2], ""]  # "does not run" names no test
    assert d.fixed == [False, True, False, False]
    assert d.well_formed == [True, True, False, True]
    use = transcripts.feedback_use(transcripts.to_dataset([d], 0.7))
    assert use["well_formed_rate"] == 3 / 4 and use["feedback_uptake_rate"] == 1 / 2
    assert use["solve_rate_after_feedback"] == 0.0


def test_hazards_on_hand_built_outcomes():
    # solved at turn 1 (no later turn counts), at 2 (1 later turn), never in 4 turns (3), at 3 (2)
    assert transcripts.hazard([1, 2, 0, 3], [1, 2, 4, 3]) == (2, 6)
    assert transcripts.hazard([0, 0], [4, 2]) == (0, 4)  # a dialogue cut short takes fewer turns
    assert transcripts.hazard([1, 1], [1, 1]) == (0, 0)
    # retries: per task, tries in sample order; the first success and the tries taken until then
    retries = {"task_id": ["a"] * 4 + ["b"] * 4 + ["c"] * 4, "sample": [3, 2, 1, 0] * 3,
               "solved_turn": [0, 1, 0, 0] + [0] * 4 + [0, 0, 1, 0]}
    assert transcripts.first_successes(retries) == ([3, 0, 2], [3, 4, 2])
    assert transcripts.retry_counts(retries).sum(0).tolist() == [2, 6]  # later tries: a 2, b 3, c 1
    data = datasets.Dataset.from_list([hand(["attempt", "attempt"], [False, False], solved_turn=2),
                                       hand(["attempt"] * 3, [False] * 3)])
    assert transcripts.feedback_use(data, retries)["solve_rate_after_feedback"] == 1 / 3
    assert transcripts.feedback_use(data, retries)["solve_rate_after_retry"] == 2 / 6


def test_pooled_feedback_rates_rest_on_exact_counts():
    seed0 = datasets.Dataset.from_list([hand(["attempt", "attempt"], [False, False], named=["step 1 = 7"],
                                             fixed=[False, True], solved_turn=2)])
    seed1 = datasets.Dataset.from_list([hand(["attempt", "attempt", "other"], [False] * 3, named=["step 1 = 7", ""],
                                             well_formed=[True, True, False])])
    retries = {"task_id": ["a", "a", "b", "b"], "sample": [0, 1, 0, 1], "solved_turn": [0, 1, 0, 0]}
    out = transcripts.behaviour_intervals([seed0, seed1], [retries], n_boot=300)
    assert (out["named_errors"], out["later_turns"], out["retry_tasks"], out["later_tries"]) == (2, 3, 2, 2)
    assert out["feedback_uptake_rate"] == 1 / 2 and out["well_formed_rate"] == 4 / 5
    assert out["solve_rate_after_feedback"] == 1 / 3 and out["solve_rate_after_retry"] == 1 / 2
    for short in ("well_formed", "feedback_uptake", "solve_after_feedback", "solve_after_retry"):
        assert 0 <= out[f"{short}_low"] <= out[f"{short}_high"] <= 1
    cell = ("base", "none", "math", "full")
    rows = interval_rows({cell: [seed0, seed1]}, {cell: [retries]})
    assert list(rows.columns) == transcripts.INTERVAL_COLUMNS and rows.iloc[0]["solve_rate_after_retry"] == 1 / 2
    assert interval_rows({("base", "none", "math", "sharded"): [seed0]}).iloc[0]["later_tries"] == 0


def test_retry_comparator_on_a_student_that_is_right_on_its_third_fresh_try(tok, model):
    """Independent single-turn tries: the scripted student solves the first task on its 3rd try of it and
    never solves the second; in dialogues the student solves the first at turn 2 (its script's right answer
    is wrong for the second)."""
    calls = defaultdict(int)

    def third_try(prompt):
        calls[prompt] += 1
        return RIGHT if "( 3 + 4 ) * 5" in prompt and calls[prompt] == 3 else "The answer is 1."

    tasks = [math_task(), math_task("2 + 2", "4", i=1)]
    student = replay(tok, model, [])
    student.script = third_try
    data, hazard, curve = retry_comparator(student, ScriptedTeacher(), tasks, sections.dialogue(eval_turns=4), seed=0,
                                           progress=False)
    assert len(data) == 8 and set(data["turns"]) == {1} and sorted(data["sample"]) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert hazard == pytest.approx(1 / 5)  # tries 2..4 of task 2 (3) and 2..3 of task 1 (2), one success
    assert curve["success"].tolist() == [0.0, 0.0, 0.5, 0.5] and curve["n"].tolist() == [2] * 4
    dialogue = replay(tok, model, ["The answer is 1.", RIGHT, RIGHT, RIGHT])
    _, _, row = evaluate(dialogue, ScriptedTeacher(), tasks, sections.dialogue(eval_turns=4), condition="base",
                         train_domain="none", variant="full", seed=0, retries=data, progress=False)
    assert list(row) == transcripts.BEHAVIOUR_COLUMNS
    # later turns: 1 of task 1 (solved at 2), 3 of task 2; no wrong step is shown, so no uptake to measure
    assert row["solve_rate_after_feedback"] == pytest.approx(1 / 4)
    assert row["solve_rate_after_retry"] == pytest.approx(1 / 5)
    assert row["feedback_uptake_rate"] == 0.0 and row["well_formed_rate"] == 1.0
