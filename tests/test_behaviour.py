"""Behaviour on underspecified tasks: how turns are labelled, when an attempt is premature, and the
pooled rates with their intervals that go into metrics/summary.json."""

import datasets
import pandas as pd
import pytest
import sections

from sml.evaluation import collect, transcripts
from sml.dialogue.engine import run_dialogues
from sml.evaluation.evaluate import interval_rows
from sml.tasks import toy_code
from sml.dialogue.environment import classify
from sml.dialogue.teacher import ScriptedTeacher
from test_dialogue import math_task, model, replay, tok  # noqa: F401 (model, tok: shared fixtures)


@pytest.mark.parametrize("text,label", [
    # answer attempts (LiC: answer attempt; hedged answers count as attempts too)
    ("Step 1: 3 + 4 = 7. Step 2: 7 * 5 = 35. The answer is 35.", "attempt"),
    ("35", "attempt"),
    ("It is probably 35, but it could be 36.", "attempt"),
    ("Is it 35? The answer is 35.", "attempt"),
    # information requests (LiC: clarification, interrogation)
    ("Which numbers do I start with?", "question"),
    ("What is step 2? And what comes after it?", "question"),
    ("Could you tell me the second step?", "question"),
    # neither (LiC: discussion, refusal, missing)
    ("Let me think about how to do this.", "other"),
    ("I can't do that.", "other"),
    ("", "other"),
])
def test_math_turns_written_by_hand_are_labelled(text, label):
    assert classify(text, math_task()) == label


@pytest.mark.parametrize("text,label", [
    ("```python\ndef f(x):\n    return x + 1\n```", "attempt"),
    ("Here is my code:\n```python\ndef f(s):\n    return s[::-1]\n```\nDoes it work?", "attempt"),
    ("import math\ndef f(x): return x", "attempt"),
    ("What should f(3) return?", "question"),
    ("Should the list be sorted first? Or kept as it is?", "question"),
    ("I will write the function next.", "other"),
    ("", "other"),
])
def test_code_turns_written_by_hand_are_labelled(text, label):
    assert classify(text, toy_code.generate(1, 0)[0]) == label


def test_premature_attempts_on_hand_built_sharded_dialogues(tok, model):
    """Three scripted dialogues on a 2-step task (intent + 2 shards): an attempt is premature while a
    shard is still hidden. With one shard per turn, turn 3 is the first one that has seen them all; when
    shards come only on request, an attempt stays premature until the student has asked twice."""
    task = math_task()  # 3 shards
    right = "3 + 4 = 7\n7 * 5 = 35\nThe answer is 35."
    scripts = {"guesser": ["The answer is 1.", "The answer is 2.", right],
               "asker": ["What is step 1?", "What is step 2?", right],
               "mixed": ["The answer is 1.", "What is step 2?", right]}
    expected = {  # (premature per turn) with every_turn, then with on_question
        "guesser": ([True, True, False], [True, True, True]),
        "asker": ([False, False, False], [False, False, False]),
        "mixed": ([True, False, False], [True, False, True]),
    }
    for mode, column in (("every_turn", 0), ("on_question", 1)):
        runs = {name: run_dialogues([task], replay(tok, model, turns), ScriptedTeacher(),
                                    sections.dialogue(shard_reveal=mode), variant="sharded", max_turns=3,
                                    progress=False)[0] for name, turns in scripts.items()}
        for name, d in runs.items():
            assert d.premature == expected[name][column], (mode, name)
        data = transcripts.to_dataset(runs.values(), 0.7)
        flagged = sum(sum(e[column]) for e in expected.values())
        attempts = sum(label == "attempt" for d in runs.values() for label in d.labels)  # 3 + 1 + 2
        assert attempts == 6
        assert transcripts.behaviour(data)["premature_rate"] == pytest.approx(flagged / attempts)
        assert transcripts.behaviour(data)["question_rate"] == pytest.approx(3 / 9)


def hand(labels, premature, named=None, fixed=None, solved_turn=0, well_formed=None):
    """A hand-written transcript record with the fields the behaviour rates read (defaults: every turn well
    formed, no error named, unsolved)."""
    return {"labels": labels, "premature": premature, "well_formed": well_formed or [True] * len(labels),
            "named": named or [""] * (len(labels) - 1), "fixed": fixed or [False] * len(labels),
            "solved_turn": solved_turn}


def test_pooled_rates_and_bootstrap_intervals_from_hand_built_transcripts():
    seed0 = datasets.Dataset.from_list([hand(["attempt", "attempt"], [True, False]),
                                        hand(["question", "attempt"], [False, False])])
    seed1 = datasets.Dataset.from_list([hand(["attempt"], [True]),
                                        hand(["question", "question", "attempt"], [False, False, False])])
    out = transcripts.behaviour_intervals([seed0, seed1], n_boot=500)
    assert (out["dialogues"], out["attempts"], out["turns"]) == (4, 5, 8)
    assert out["premature_rate"] == pytest.approx(2 / 5) and out["question_rate"] == pytest.approx(3 / 8)
    for name in ("premature", "question"):
        assert 0 <= out[f"{name}_low"] <= out[f"{name}_rate"] <= out[f"{name}_high"] <= 1
        assert out[f"{name}_low"] < out[f"{name}_high"]  # four dialogues: a wide interval, not a point
    assert transcripts.behaviour_intervals([seed0, seed1], n_boot=500) == out  # seeded: reproducible
    same = datasets.Dataset.from_list([hand(["attempt"], [True])] * 30)
    flat = transcripts.behaviour_intervals([same], n_boot=200)
    assert flat["premature_low"] == flat["premature_high"] == 1.0 and flat["question_rate"] == 0.0


def test_summary_carries_each_cell_s_rates_and_intervals(tmp_path):
    rows = pd.DataFrame([{"condition": "base", "train_domain": "none", "eval_domain": "math", "variant": v, "seed": 0,
                          "turn": 1, "success": 0.5, "n": 10} for v in ("full", "sharded")])
    data = datasets.Dataset.from_list([hand(["attempt", "question"], [True, False])] * 5)
    intervals = interval_rows({("base", "none", "math", "sharded"): [data]})
    parts = tmp_path / "metrics" / "parts"
    transcripts.write_csv(parts / "eval" / "base.csv", rows, transcripts.EVAL_COLUMNS)
    transcripts.write_csv(parts / "behaviour" / "base.csv", pd.DataFrame([{
        "condition": "base", "train_domain": "none", "eval_domain": "math", "variant": "sharded", "seed": 0,
        "premature_rate": 1.0, "question_rate": 0.5, "mean_turns_to_solve": 1.0, "leak_rate": 0.0,
        "well_formed_rate": 1.0, "feedback_uptake_rate": 0.0, "solve_rate_after_feedback": 0.0,
        "solve_rate_after_retry": 0.0}]),
        transcripts.BEHAVIOUR_COLUMNS)
    transcripts.write_csv(parts / "intervals" / "base.csv", intervals, transcripts.INTERVAL_COLUMNS)
    summary = collect.collect(tmp_path)
    sharded = summary["base"]["none->math sharded"]
    assert sharded["premature_rate"] == 1.0 and sharded["question_rate"] == 0.5 and sharded["attempts"] == 5
    assert sharded["question_rate_ci"] == [0.5, 0.5]
    assert sharded["well_formed_rate"] == 1.0 and sharded["solve_rate_after_feedback"] == 0.0  # 5 later turns
    assert "feedback_uptake_rate" not in sharded and "solve_rate_after_retry" not in sharded  # nothing to count
    assert (sharded["named_errors"], sharded["later_turns"], sharded["later_tries"]) == (0, 5, 0)
    assert "premature_rate" not in summary["base"]["none->math full"]


def test_engine_labels_turns_with_the_classifier_it_is_given(tok, model):
    """With a classifier (an LLM judge of LiC's strategies for real models) its labels replace the rules:
    here it calls every turn a question, so even the right answer is not checked, and the teacher answers."""
    class AllQuestions:
        def __init__(self):
            self.seen = []

        def labels(self, dialogues, replies, tasks):
            self.seen.append((len(dialogues[0]), list(replies)))
            return ["question"] * len(replies)

    judge, right = AllQuestions(), "3 + 4 = 7\n7 * 5 = 35\nThe answer is 35."
    (d,) = run_dialogues([math_task()], replay(tok, model, [right, right]), ScriptedTeacher(), sections.dialogue(),
                         max_turns=2, classifier=judge, progress=False)
    assert d.labels == ["question", "question"] and d.solved_turn == 0
    assert judge.seen == [(1, [right]), (3, [right])]  # the dialogue before the reply, and the reply
    assert d.messages[2]["content"].startswith("Hint: step 1")
