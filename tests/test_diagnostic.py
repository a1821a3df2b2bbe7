"""The loss-on-answer diagnostic: one value per teacher turn, equal to a plain forward pass of each
context followed by the answer, whatever the batching."""

import torch

import pandas as pd

from sml.evaluation.diagnostic import answer_losses, answer_target, dialogue_losses, loss_curve, loss_drop
from sml.train.sft import answer_of
from sml.dialogue.student import Student
from test_dialogue import math_task, model, tok  # noqa: F401 (model, tok: shared fixtures)


def reference_loss(student, messages, answer, prefix=""):
    ids = student.prompt_ids(messages) + (student.encode(prefix) if prefix else [])
    target = student.encode(answer) + [student.eos_id]
    with torch.no_grad():
        logits = student.model(input_ids=torch.tensor([ids + target])).logits[0]
    logp = logits[len(ids) - 1:-1].log_softmax(-1)
    return float(-logp[torch.arange(len(target)), torch.tensor(target)].mean())


def test_loss_after_each_teacher_turn_matches_a_plain_forward_pass(tok, model):
    student = Student(model, tok, device="cpu")
    task = math_task()
    messages = [{"role": "user", "content": task["prompt"]}, {"role": "assistant", "content": "The answer is 30."},
                {"role": "user", "content": "That is not right. Hint: step 1 is 3 + 4 = 7."},
                {"role": "assistant", "content": "What is step 2?"},
                {"role": "user", "content": "I can't tell you the answer, but you have everything you need."}]
    answer = answer_of(task)
    expected = [reference_loss(student, messages[:cut], answer) for cut in (1, 3, 5)]
    for batch_size in (1, 2, 16):  # contexts of different lengths share a left-padded batch
        got = answer_losses(student, messages, answer, batch_size=batch_size)
        assert len(got) == 3
        assert torch.allclose(torch.tensor(got), torch.tensor(expected), atol=1e-4)
    assert len(set(round(v, 4) for v in expected)) == 3  # the feedback changes what the model expects


def test_dialogue_losses_keep_a_fixed_cohort_of_dialogues_that_lasted(tok, model):
    student = Student(model, tok, device="cpu")
    task = math_task()
    long = {"id": "long", "task_id": task["id"], "messages": [{"role": "user", "content": task["prompt"]},
                                                              {"role": "assistant", "content": "The answer is 30."},
                                                              {"role": "user", "content": "That is not right."},
                                                              {"role": "assistant", "content": "31"},
                                                              {"role": "user", "content": "Too high."}]}
    short = {"id": "short", "task_id": task["id"], "messages": long["messages"][:1]}  # solved at once: left out
    table = dialogue_losses(student, [long, short], {task["id"]: task}, turns=2)
    assert table["dialogue"].tolist() == ["long", "long"] and table["turn"].tolist() == [1, 2]
    prefix, answer = answer_target(task)
    assert prefix == "The answer is" and answer == f" {task['answer']}."  # math: only the final value is scored
    expected = [reference_loss(student, long["messages"][:cut], answer, prefix) for cut in (1, 3)]
    assert torch.allclose(torch.tensor(table["loss"].tolist()), torch.tensor(expected), atol=1e-4)


def test_loss_drop_and_curve_on_known_losses():
    # two dialogues: one falls by 2 nats, one by 0 -> mean drop 1; the bootstrap can only pick 0, 1 or 2
    frame = pd.DataFrame({"dialogue": ["a", "a", "a", "b", "b", "b"], "turn": [1, 2, 3] * 2,
                          "loss": [3.0, 2.0, 1.0, 1.0, 1.5, 1.0]})
    drop = loss_drop(frame)
    assert (drop["dialogues"], drop["turns"], drop["drop"], drop["loss_first"], drop["loss_last"]) == (2, 3, 1.0, 2.0, 1.0)
    assert drop["drop_low"] == 0.0 and drop["drop_high"] == 2.0
    assert loss_drop(frame) == drop  # a fixed bootstrap seed
    curve = loss_curve(frame)
    assert curve["turn"].tolist() == [1, 2, 3] and curve["loss"].tolist() == [2.0, 1.75, 1.0]
    assert curve["n"].tolist() == [2, 2, 2] and (curve["ci_low"] <= curve["loss"]).all()
    assert curve.loc[2, "ci_low"] == curve.loc[2, "ci_high"] == 1.0  # no spread, no width
    assert loss_drop(frame.iloc[:0])["dialogues"] == 0
