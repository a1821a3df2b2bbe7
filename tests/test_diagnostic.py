"""The loss-on-answer diagnostic: one value per teacher turn, equal to a plain forward pass of each
context followed by the answer, whatever the batching."""

import torch

from sml.diagnostic import answer_losses, loss_by_turn
from sml.sft import answer_of
from sml.student import Student
from test_dialogue import math_task, model, tok  # noqa: F401 (model, tok: shared fixtures)


def reference_loss(student, messages, answer):
    ids = student.prompt_ids(messages)
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


def test_loss_by_turn_averages_over_the_dialogues_that_reached_each_turn(tok, model):
    student = Student(model, tok, device="cpu")
    task = math_task()
    long = {"task_id": task["id"], "messages": [{"role": "user", "content": task["prompt"]},
                                                {"role": "assistant", "content": "The answer is 30."},
                                                {"role": "user", "content": "That is not right."}]}
    short = {"task_id": task["id"], "messages": long["messages"][:1]}
    table = loss_by_turn(student, [long, short], {task["id"]: task})
    assert table["turn"].tolist() == [1, 2] and table["n"].tolist() == [2, 1]
    first = reference_loss(student, long["messages"][:1], answer_of(task))
    assert abs(table["loss"].iloc[0] - first) < 1e-4
