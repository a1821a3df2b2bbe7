"""Evaluation rollouts: dialogues on held-out tasks, turned into the contract's metric rows
(``metrics/eval.csv``: SR@turn per condition x domain x variant x seed; ``metrics/behaviour.csv``)."""

from __future__ import annotations

import pandas as pd

from sml import resume
from sml.evaluation import transcripts
# the student to evaluate, in-process or served (generation.eval): shared with data collection (sft.rollout_student)
from sml.dialogue.remote_student import BACKENDS, load_student  # noqa: F401


def evaluate(student, teacher, tasks, *, condition: str, train_domain: str, variant: str, seed: int,
             max_turns: int = 10, gamma: float = 0.7, folder=None, chunk_tasks: int | None = None, **engine_kwargs):
    """Run one evaluation cell; return ``(transcripts, eval_rows, behaviour_row)``. With a ``folder``, the
    dialogues are written there chunk by chunk (``chunk_tasks`` tasks each) and an interrupted cell resumes
    (``resume.dialogues``)."""
    tasks = list(tasks)
    if not tasks:
        raise ValueError(f"evaluate: no tasks for condition {condition!r}, variant {variant!r}")
    domains = {t["domain"] for t in tasks}
    if len(domains) != 1:
        raise ValueError(f"evaluate: tasks mix domains {sorted(domains)}; evaluate one domain at a time")
    data = resume.dialogues(tasks, student, teacher, variant=variant, max_turns=max_turns, gamma=gamma, seed=seed,
                            folder=folder, chunk_tasks=chunk_tasks, **engine_kwargs)
    keys = {"condition": condition, "train_domain": train_domain, "eval_domain": domains.pop(), "variant": variant,
            "seed": seed}
    rows = transcripts.success_at(data, max_turns).assign(**keys)
    return data, rows, {**keys, **transcripts.behaviour(data)}


def success_table(rows: pd.DataFrame, turns=(1, 4, 10)) -> pd.DataFrame:
    """SR@k at a few turns, one row per cell: the compact view for notebooks and READMEs."""
    picked = rows[rows["turn"].isin(turns)]
    return picked.pivot_table(index=["condition", "train_domain", "eval_domain", "variant"], columns="turn",
                              values="success", aggfunc="mean").rename(columns=lambda k: f"SR@{k}")


def interval_rows(cells: dict) -> pd.DataFrame:
    """``{(condition, train_domain, eval_domain, variant): [transcripts of each seed]}`` -> one row per cell with
    the pooled premature and question rates and their bootstrap intervals (``metrics/parts/intervals``)."""
    keys = ["condition", "train_domain", "eval_domain", "variant"]
    return pd.DataFrame([{**dict(zip(keys, cell)), **transcripts.behaviour_intervals(data)} for cell, data in cells.items()],
                        columns=transcripts.INTERVAL_COLUMNS)
