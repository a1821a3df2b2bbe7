"""Evaluation rollouts: dialogues on held-out tasks, turned into the contract's metric rows
(``metrics/eval.csv``: SR@turn per condition x domain x variant x seed; ``metrics/behaviour.csv``), and the
retry comparator: the same number of independent single-turn tries, without feedback."""

from __future__ import annotations

import pandas as pd

from sml import resume, settings
from sml.evaluation import transcripts
# the student to evaluate, in-process or served (generation.eval): shared with data collection (sft.rollout_student)
from sml.dialogue.remote_student import load_student  # noqa: F401


def evaluate(student, teacher, tasks, dialogue: settings.Dialogue, *, condition: str, train_domain: str,
             variant: str, seed: int, folder=None, chunk_tasks: int | None = None, retries=None, judge=None,
             classifier=None, progress: bool = True):
    """Run one evaluation cell, dialogues of up to ``dialogue.eval_turns`` student turns; return
    ``(transcripts, eval_rows, behaviour_row)``. With a ``folder``, the dialogues are written there chunk by
    chunk (``chunk_tasks`` tasks each) and an interrupted cell resumes (``resume.dialogues``). ``retries``:
    the cell's ``retry_comparator`` transcripts, for the behaviour row's ``solve_rate_after_retry`` (0
    without them)."""
    tasks = list(tasks)
    if not tasks:
        raise ValueError(f"evaluate: no tasks for condition {condition!r}, variant {variant!r}")
    domains = {t["domain"] for t in tasks}
    if len(domains) != 1:
        raise ValueError(f"evaluate: tasks mix domains {sorted(domains)}; evaluate one domain at a time")
    data = resume.dialogues(tasks, student, teacher, dialogue, max_turns=dialogue.eval_turns, seed=seed,
                            variant=variant, folder=folder, chunk_tasks=chunk_tasks, judge=judge,
                            classifier=classifier, progress=progress)
    keys = {"condition": condition, "train_domain": train_domain, "eval_domain": domains.pop(), "variant": variant,
            "seed": seed}
    rows = transcripts.success_at(data, dialogue.eval_turns).assign(**keys)
    return data, rows, {**keys, **transcripts.behaviour(data), **transcripts.feedback_use(data, retries)}


def retry_comparator(student, teacher, tasks, dialogue: settings.Dialogue, *, seed: int, folder=None,
                     chunk_tasks: int | None = None, judge=None, progress: bool = True):
    """``dialogue.eval_turns`` independent single-turn tries of each task (one-turn dialogues, that many
    samples per task, on the full problem): what re-sampling alone achieves with as many tries as a
    dialogue has turns. Returns ``(transcripts, hazard, curve)``: the chance of solving at a try >= 2 given
    the earlier tries failed (comparable with ``solve_rate_after_feedback``) and SR@k of the tries (solved
    within k tries; ``transcripts.success_at``'s columns)."""
    tries = dialogue.eval_turns
    data = resume.dialogues(list(tasks), student, teacher, dialogue, max_turns=1, samples_per_task=tries,
                            seed=seed, folder=folder, chunk_tasks=chunk_tasks, judge=judge, progress=progress)
    first, taken = transcripts.first_successes(data)
    solves, later = transcripts.hazard(first, taken)
    return data, solves / later if later else 0.0, transcripts.success_at({"solved_turn": first}, tries)


def success_table(rows: pd.DataFrame, turns=(1, 4, 10)) -> pd.DataFrame:
    """SR@k at a few turns, one row per cell: the compact view for notebooks and READMEs."""
    picked = rows[rows["turn"].isin(turns)]
    return picked.pivot_table(index=["condition", "train_domain", "eval_domain", "variant"], columns="turn",
                              values="success", aggfunc="mean").rename(columns=lambda k: f"SR@{k}")


def interval_rows(cells: dict, retries: dict | None = None) -> pd.DataFrame:
    """``{(condition, train_domain, eval_domain, variant): [transcripts of each seed]}`` -> one row per cell with
    the pooled behaviour rates and their bootstrap intervals (``metrics/parts/intervals``); ``retries``: the
    cells' retry comparator transcripts, keyed the same way (cells without any get a retry rate of 0)."""
    keys = ["condition", "train_domain", "eval_domain", "variant"]
    retries = retries or {}
    return pd.DataFrame([{**dict(zip(keys, cell)), **transcripts.behaviour_intervals(data, retries.get(cell, ()))}
                         for cell, data in cells.items()], columns=transcripts.INTERVAL_COLUMNS)
