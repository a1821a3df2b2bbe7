"""Evaluation rollouts: dialogues on held-out tasks, turned into the contract's metric rows
(``metrics/eval.csv``: SR@turn per condition x domain x variant x seed; ``metrics/behaviour.csv``), and the
retry comparator: the same number of independent single-turn tries, without feedback. ``evaluate_cells``
runs all cells of one student, and their retry comparators, in one engine run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets
import pandas as pd

from sml import resume, settings
from sml import workers as sml_workers
from sml.dialogue.engine import Group
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
    keys = _keys(tasks, condition, train_domain, variant, seed)
    data = resume.dialogues(tasks, student, teacher, dialogue, max_turns=dialogue.eval_turns, seed=seed,
                            variant=variant, folder=folder, chunk_tasks=chunk_tasks, judge=judge,
                            classifier=classifier, progress=progress)
    return (data, *_scores(data, keys, dialogue, retries))


def retry_comparator(student, teacher, tasks, dialogue: settings.Dialogue, *, seed: int, folder=None,
                     chunk_tasks: int | None = None, judge=None, progress: bool = True):
    """``dialogue.eval_turns`` independent single-turn tries of each task (one-turn dialogues, that many
    samples per task, on the full problem): what re-sampling alone achieves with as many tries as a
    dialogue has turns. Returns ``(transcripts, hazard, curve)``: the chance of solving at a try >= 2 given
    the earlier tries failed (comparable with ``solve_rate_after_feedback``) and SR@k of the tries (solved
    within k tries; ``transcripts.success_at``'s columns)."""
    [data] = resume.grouped_dialogues([_retry_group(tasks, dialogue, seed)], student, teacher, dialogue,
                                      folders=[folder], chunk_tasks=chunk_tasks, judge=judge, progress=progress)
    return (data, *_retry_scores(data, dialogue.eval_turns))


@dataclass
class Cell:
    """One evaluation cell of a student: its ``tasks`` (one domain) on the ``variant``, sampled with ``seed``;
    with ``retries``, the cell's retry comparator too (on the same tasks, with the same seed). ``folder`` and
    ``retry_folder``: where their dialogues are written chunk by chunk, so that an interrupted run resumes
    (None: nowhere)."""
    tasks: object
    variant: str
    seed: int
    retries: bool = False
    folder: str | Path | None = None
    retry_folder: str | Path | None = None


@dataclass
class Evaluated:
    """One cell's results: what ``evaluate`` returns (``data``: the transcripts, ``rows``: its eval rows,
    ``behaviour``: its behaviour row, whose retry rate uses ``retries``) and, for a cell with retries, its
    ``retry_comparator``'s transcripts and SR@k curve (else None)."""
    data: datasets.Dataset
    rows: pd.DataFrame
    behaviour: dict
    retries: datasets.Dataset | None = None
    retry_curve: pd.DataFrame | None = None


def evaluate_cells(student, teacher, cells: dict, dialogue: settings.Dialogue, *, condition: str, train_domain: str,
                   together: bool = True, workers: int = 1, chunk_tasks: int | None = None, judge=None,
                   classifier=None, progress: bool = True) -> dict:
    """``{key: Cell}`` -> ``{key: Evaluated}``: every cell of one student (domains x variants x seeds) and
    their retry comparators, in one engine run (chunk ``k`` of every cell together, with ``chunk_tasks``):
    one batch for cells smaller than it, in far fewer forward passes. Each dialogue draws from its own stream, seeded by its
    cell's seed, so each cell gets what ``retry_comparator`` and ``evaluate`` give it alone (the same random
    draws: see ``sml.dialogue.engine`` on logits). ``together=False`` (``evaluation.cells_together``) runs the
    same groups one engine run each: faster on a CPU, where a staggered batch attends over its longest dialogue;
    then ``workers`` (``machine.workers``) one-thread processes share them out (``sml.workers``)."""
    keys = {key: _keys(list(c.tasks), condition, train_domain, c.variant, c.seed) for key, c in cells.items()}
    retried = [key for key, cell in cells.items() if cell.retries]
    # the cells' dialogues first: the retries' one-turn tries then fill the slots that dialogues free towards the
    # end of a run (else the longest dialogues would end it alone, in a batch mostly idle)
    groups = [Group(list(c.tasks), dialogue.eval_turns, c.variant, seed=c.seed, classifier=classifier)
              for c in cells.values()] + [_retry_group(cells[key].tasks, dialogue, cells[key].seed) for key in retried]
    folders = [cell.folder for cell in cells.values()] + [cells[key].retry_folder for key in retried]
    run = dict(student=student, teacher=teacher, dialogue=dialogue, chunk_tasks=chunk_tasks, judge=judge,
               progress=progress)
    if together:
        runs = resume.grouped_dialogues(groups, folders=folders, **run)
    else:  # one engine run per group: the same dialogues (own streams), but no staggered batch (faster on a CPU)
        runs = sml_workers.grouped_apart(groups, folders, workers, **run)
    data, retries = dict(zip(cells, runs)), dict(zip(retried, runs[len(cells):]))
    results = {}
    for key in cells:
        tries = retries.get(key)
        curve = _retry_scores(tries, dialogue.eval_turns)[1] if tries is not None else None
        results[key] = Evaluated(data[key], *_scores(data[key], keys[key], dialogue, tries), tries, curve)
    return results


def _keys(tasks: list, condition: str, train_domain: str, variant: str, seed: int) -> dict:
    """A cell's key columns (checking that it has tasks, all of one domain)."""
    if not tasks:
        raise ValueError(f"evaluate: no tasks for condition {condition!r}, variant {variant!r}")
    domains = {t["domain"] for t in tasks}
    if len(domains) != 1:
        raise ValueError(f"evaluate: tasks mix domains {sorted(domains)}; evaluate one domain at a time")
    return {"condition": condition, "train_domain": train_domain, "eval_domain": domains.pop(), "variant": variant,
            "seed": seed}


def _scores(data, keys: dict, dialogue: settings.Dialogue, retries) -> tuple[pd.DataFrame, dict]:
    """A cell's eval rows and behaviour row."""
    rows = transcripts.success_at(data, dialogue.eval_turns).assign(**keys)
    return rows, {**keys, **transcripts.behaviour(data), **transcripts.feedback_use(data, retries)}


def _retry_group(tasks, dialogue: settings.Dialogue, seed: int) -> Group:
    """The retry comparator's dialogues: ``dialogue.eval_turns`` one-turn tries of each task, full problem."""
    return Group(list(tasks), 1, "full", samples_per_task=dialogue.eval_turns, seed=seed)


def _retry_scores(data, tries: int) -> tuple[float, pd.DataFrame]:
    """The retry comparator's hazard and SR@k curve (see ``retry_comparator``)."""
    first, taken = transcripts.first_successes(data)
    solves, later = transcripts.hazard(first, taken)
    return solves / later if later else 0.0, transcripts.success_at({"solved_turn": first}, tries)


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
