"""The paper's diagnostic: the student's loss on the correct answer after each teacher turn.

A student that uses feedback becomes surer of the right answer as the teacher speaks: its loss on the
reference answer, written as the student's next turn, falls from one teacher turn to the next. A
student that ignores feedback stays flat. Read off evaluation transcripts, so it costs one forward pass
per teacher turn and no generation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from sml.train.sft import answer_of
from sml.dialogue.student import Student, left_pad


def answer_target(task: dict) -> tuple[str, str]:
    """``(prefix, answer)``: what is scored is ``answer`` after ``prefix`` (given, not scored). Math: the final
    value after "The answer is", so that only the result counts and not the student's choice to write out
    its working again (after feedback it rarely does, which alone raises the loss of a full solution). Code:
    the reference program, whose every token is part of the answer."""
    if task["domain"] == "math":
        return "The answer is", f" {task['answer']}."
    return "", answer_of(task)


@torch.no_grad()
def answer_losses(student: Student, messages: list[dict], answer: str, batch_size: int = 16,
                  turns: int | None = None, prefix: str = "") -> list[float]:
    """Mean per-token loss (nats) of ``answer``, after ``prefix``, as the student's reply after each teacher
    message of ``messages`` (teacher = ``user``): one value per teacher turn, the opening included (the
    first ``turns`` of them if given)."""
    answer_ids = student.encode(prefix + answer) + [student.eos_id]  # the end of the turn is part of a right answer
    prefix_ids = student.encode(prefix) if prefix else []
    given = len(prefix_ids)
    if prefix_ids != answer_ids[:given]:
        raise ValueError(f"answer_losses: {prefix!r} does not tokenize the same before {answer!r}")
    cuts = [k + 1 for k, m in enumerate(messages) if m["role"] == "user"][:turns]
    sequences = [student.prompt_ids(messages[:cut]) + answer_ids for cut in cuts]
    losses = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start:start + batch_size]
        ids, mask = left_pad(batch, student.pad_id)
        position = (mask.cumsum(-1) - 1).clamp(min=0)  # real tokens only (for absolute positions)
        logits = student.model(input_ids=ids.to(student.device), attention_mask=mask.to(student.device),
                               position_ids=position.to(student.device)).logits
        scored = logits[:, -len(answer_ids) - 1 + given:-1].float().log_softmax(-1)  # the positions that predict it
        target = torch.tensor(answer_ids[given:], device=scored.device).expand(len(batch), -1)
        losses += (-scored.gather(-1, target[..., None]).squeeze(-1).mean(-1)).tolist()
    return losses


def teacher_turns(record: dict) -> int:
    return sum(m["role"] == "user" for m in record["messages"])


def dialogue_losses(student: Student, transcripts, tasks: dict, turns: int, batch_size: int = 16) -> pd.DataFrame:
    """``dialogue, turn, loss`` for teacher turns 1..``turns`` of every dialogue that lasted that long: a fixed
    cohort, so a change across turns is the feedback's doing and not a change of which dialogues are left
    (the ones solved early drop out, and they are the easy ones)."""
    rows = []
    for record in transcripts:
        if teacher_turns(record) < turns:
            continue
        prefix, answer = answer_target(tasks[record["task_id"]])
        losses = answer_losses(student, record["messages"], answer, batch_size, turns, prefix)
        rows += [{"dialogue": record["id"], "turn": t, "loss": v} for t, v in enumerate(losses, 1)]
    return pd.DataFrame(rows, columns=["dialogue", "turn", "loss"])


def _mean_interval(values: np.ndarray, rng: np.random.Generator, n_boot: int) -> tuple[float, float]:
    """95% bootstrap interval of the mean of ``values``."""
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def loss_drop(frame: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> dict:
    """How much the loss on the answer falls from the first teacher turn to the last of ``frame``
    (``dialogue_losses``, a cell's seeds concatenated), per dialogue, averaged: ``drop`` > 0 means the
    student grows surer of the right answer as feedback arrives. 95% bootstrap interval over dialogues."""
    if frame.empty:
        return {"dialogues": 0, "turns": 0, "loss_first": float("nan"), "loss_last": float("nan"),
                "drop": float("nan"), "drop_low": float("nan"), "drop_high": float("nan")}
    wide = frame.pivot(index="dialogue", columns="turn", values="loss").sort_index()
    drops = (wide.iloc[:, 0] - wide.iloc[:, -1]).to_numpy()
    low, high = _mean_interval(drops, np.random.default_rng(seed), n_boot)
    return {"dialogues": len(wide), "turns": wide.shape[1], "loss_first": float(wide.iloc[:, 0].mean()),
            "loss_last": float(wide.iloc[:, -1].mean()), "drop": float(drops.mean()), "drop_low": low,
            "drop_high": high}


def loss_curve(frame: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """``turn, loss, ci_low, ci_high, n``: the mean loss per teacher turn of ``frame`` with a 95% bootstrap
    interval over dialogues."""
    rng, rows = np.random.default_rng(seed), []
    for turn, at in frame.groupby("turn"):
        values = at["loss"].to_numpy()
        low, high = _mean_interval(values, rng, n_boot)
        rows.append({"turn": int(turn), "loss": float(values.mean()), "ci_low": low, "ci_high": high, "n": len(values)})
    return pd.DataFrame(rows, columns=["turn", "loss", "ci_low", "ci_high", "n"])
