"""The paper's diagnostic: the student's loss on the correct answer after each teacher turn.

A student that uses feedback becomes surer of the right answer as the teacher speaks: its loss on the
reference answer, written as the student's next turn, falls from one teacher turn to the next. A
student that ignores feedback stays flat. Read off evaluation transcripts, so it costs one forward pass
per teacher turn and no generation.
"""

from __future__ import annotations

import pandas as pd
import torch

from .sft import answer_of
from .student import Student, left_pad


@torch.no_grad()
def answer_losses(student: Student, messages: list[dict], answer: str, batch_size: int = 16) -> list[float]:
    """Mean per-token loss (nats) of ``answer`` as the student's reply after each teacher message of
    ``messages`` (teacher = ``user``): one value per teacher turn, the opening included."""
    answer_ids = student.encode(answer) + [student.eos_id]  # the end of the turn is part of a right answer
    cuts = [k + 1 for k, m in enumerate(messages) if m["role"] == "user"]
    sequences = [student.prompt_ids(messages[:cut]) + answer_ids for cut in cuts]
    losses = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start:start + batch_size]
        ids, mask = left_pad(batch, student.pad_id)
        position = (mask.cumsum(-1) - 1).clamp(min=0)  # real tokens only (for absolute positions)
        logits = student.model(input_ids=ids.to(student.device), attention_mask=mask.to(student.device),
                               position_ids=position.to(student.device)).logits
        scored = logits[:, -len(answer_ids) - 1:-1].float().log_softmax(-1)  # the positions that predict the answer
        target = torch.tensor(answer_ids, device=scored.device).expand(len(batch), -1)
        losses += (-scored.gather(-1, target[..., None]).squeeze(-1).mean(-1)).tolist()
    return losses


def loss_by_turn(student: Student, transcripts, tasks: dict, max_dialogues: int | None = None) -> pd.DataFrame:
    """``turn, loss, n``: the mean loss on each task's reference answer (``sft.answer_of``) after teacher
    turn ``turn`` (1 = the opening), over the dialogues of ``transcripts`` that reached that turn.
    ``tasks`` maps task ids to task records."""
    rows = []
    for record in list(transcripts)[:max_dialogues]:
        answer = answer_of(tasks[record["task_id"]])
        rows += [{"turn": t, "loss": v} for t, v in enumerate(answer_losses(student, record["messages"], answer), 1)]
    frame = pd.DataFrame(rows, columns=["turn", "loss"])
    return frame.groupby("turn")["loss"].agg(loss="mean", n="size").reset_index()
