"""Resumable work: dialogues written to disk chunk by chunk as they finish, and trainer checkpoints.

A stage that dies part-way (killed, out of time, a teacher endpoint down) and is run again picks up
where it stopped: finished chunks of dialogues are read back instead of simulated again, and training
continues from its last checkpoint (weights, optimiser, scheduler, random state and log). Each stage
keeps this in its own work folder, ``<out_root>/.sml_work/<stage>/<fingerprint>``, outside every DVC
output (DVC deletes a stage's outputs before running it). The fingerprint covers everything that decides
the result (the stage's parameters and its input files), so a changed setting or model never resumes
stale work; the stage deletes its work folder once its outputs are written.

Resuming gives exactly the uninterrupted result: chunk ``k`` always samples with the same seed, and the
trainer restores its random state with the checkpoint. Several groups of dialogues (an evaluation's cells)
run together chunk by chunk: chunk ``k`` of every group in one engine run, each group's chunk written to
its own folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import datasets
from tqdm.auto import tqdm
from transformers import TrainerCallback

from sml import settings
from sml.dialogue.engine import Group, run_groups
from sml.evaluation import transcripts

WORK = ".sml_work"
_WHOLE_FILE_BYTES = 64 << 20  # bigger files are fingerprinted by size and their first and last MiB


def fingerprint(settings: dict, inputs=()) -> str:
    """A short hash of ``settings`` (JSON-able) and of the files under each path in ``inputs``."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for root in map(Path, inputs):
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root] if root.exists() else []
        digest.update(f"{root.name}:{len(files)}".encode())
        for path in files:
            digest.update(f"{path.relative_to(root) if root.is_dir() else path.name}:{path.stat().st_size}".encode())
            digest.update(_file_digest(path))
    return digest.hexdigest()[:16]


def _file_digest(path: Path) -> bytes:
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= _WHOLE_FILE_BYTES:
            return hashlib.sha256(f.read()).digest()
        head = f.read(1 << 20)
        f.seek(size - (1 << 20))
        return hashlib.sha256(head + f.read()).digest()


def work_dir(out_root: str | Path, stage: str, settings: dict, inputs=()) -> Path:
    """The work folder of ``stage`` for these settings, inputs and version of the ``sml`` code (its source
    files are fingerprinted too: work done by other code is never resumed). Work left by the same stage
    under other settings can never be resumed, so it is removed."""
    parent = Path(out_root) / WORK / stage
    folder = parent / fingerprint(settings, [*inputs, *sorted(Path(__file__).parent.rglob("*.py"))])
    if parent.exists():
        for other in parent.iterdir():
            if other != folder:
                shutil.rmtree(other, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings, indent=1, sort_keys=True, default=str) + "\n")
    return folder


def finish(folder: str | Path) -> None:
    """The stage's outputs are written: its work folder (and the stage's folder, when empty) goes."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass


def chunk_seed(seed: int, k: int) -> int:
    """The sampling seed of chunk ``k``: ``seed`` itself for the first (so one chunk is exactly an
    unchunked run), a hash of both for the others (chunks of nearby seeds never share a random stream)."""
    if k == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}:{k}".encode()).digest()[:4], "little") >> 1


def dialogues(tasks, student, teacher, dialogue: settings.Dialogue, *, max_turns: int, seed: int,
              folder: str | Path | None = None, chunk_tasks: int | None = None, progress: bool = True,
              variant: str = "full", samples_per_task: int = 1, judge=None, inject=None,
              classifier=None) -> datasets.Dataset:
    """``engine.run_dialogues`` over ``tasks`` in chunks of ``chunk_tasks`` tasks (all in one when None),
    as a transcript dataset (returns scored with ``dialogue.gamma``). With a ``folder``, each chunk's
    transcripts are written there as soon as the chunk is done, and chunks already there are read back
    instead of run: an interrupted call, run again with the same arguments, loses nothing and repeats
    nothing. The other arguments go to ``run_dialogues`` as they are."""
    group = Group(list(tasks), max_turns, variant, samples_per_task, seed, classifier)
    [data] = grouped_dialogues([group], student, teacher, dialogue, folders=[folder], chunk_tasks=chunk_tasks,
                               progress=progress, judge=judge, inject=inject)
    return data


def grouped_dialogues(groups: list[Group], student, teacher, dialogue: settings.Dialogue, *, folders=None,
                      chunk_tasks: int | None = None, progress: bool = True, judge=None,
                      inject=None) -> list[datasets.Dataset]:
    """``dialogues`` for several groups of dialogues (``engine.Group``) at once, one transcript dataset per
    group; ``folders``: one per group (or None), as ``dialogues``' ``folder``. Chunk ``k`` of every group
    runs in one engine run, sampling with the seed it has in ``dialogues`` (each chunk of each group its
    own), so each group gets the dialogues ``dialogues`` gives it alone, and an interrupted call
    resumes at the first chunk some group lacks."""
    folders = [Path(f) if f is not None else None for f in folders or [None] * len(groups)]
    for folder in filter(None, folders):
        folder.mkdir(parents=True, exist_ok=True)
    chunked = [_chunks(list(g.tasks), chunk_tasks or max(1, len(g.tasks))) for g in groups]
    n_chunks = max(map(len, chunked), default=0)
    records = [[] for _ in groups]
    for k in tqdm(range(n_chunks), desc="chunks", unit="chunk", disable=not progress or n_chunks < 2):
        todo = []  # (group index, its chunk's file or None, the chunk as a group)
        for g, (group, chunks, folder) in enumerate(zip(groups, chunked, folders)):
            path = folder / f"chunk-{k:05d}.jsonl" if folder is not None and k < len(chunks) else None
            if path is not None and path.exists():
                records[g] += _read_jsonl(path)
            elif k < len(chunks):
                todo.append((g, path, replace(group, tasks=chunks[k], seed=chunk_seed(group.seed, k))))
        if not todo:
            continue
        try:
            done = run_groups([chunk for *_, chunk in todo], student, teacher, dialogue, judge=judge, inject=inject,
                              progress=progress)
        except Exception as e:
            if not k or all(path is None for _, path, _ in todo):
                raise
            kept = os.path.commonpath([str(f) for f in folders if f is not None])
            raise RuntimeError(f"dialogues stopped in chunk {k + 1} of {n_chunks} ({e}); the {sum(map(len, records))} "
                               f"dialogues of the first {k} chunk(s) are kept in {kept}: run again to resume") from e
        for (g, path, _), run in zip(todo, done):
            rows = [transcripts.record(d, dialogue.gamma) for d in run]
            if path is not None:
                _write_jsonl(path, rows)
            records[g] += rows
    return [datasets.Dataset.from_list(rows, features=transcripts.FEATURES) for rows in records]


def _chunks(tasks: list, size: int) -> list[list]:
    return [tasks[i:i + size] for i in range(0, len(tasks), size)]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # write then rename: never half a chunk on disk
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)


def _read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def last_checkpoint(folder: str | Path | None) -> str | None:
    """The newest complete ``checkpoint-N`` a trainer saved in ``folder``, if any. The trainer writes a
    checkpoint's ``trainer_state.json`` last, so one killed while saving has none (or half of one) and
    the one before it is used."""
    if folder is None or not Path(folder).is_dir():
        return None
    found = [(int(m.group(1)), p) for p in Path(folder).iterdir() if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))]
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return str(path)
    return None


def checkpointing(every: int | None) -> dict:
    """Trainer arguments that save a full checkpoint every ``every`` optimiser steps (None/0: never),
    keeping only the newest."""
    if not every:
        return {"save_strategy": "no"}
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"resume.checkpoint_steps: must be a non-negative integer, got {every!r}")
    return {"save_strategy": "steps", "save_steps": every, "save_total_limit": 1}


class ReplayLogs(TrainerCallback):
    """Put before a logger callback (e.g. ``DVCLiveCallback``): when training resumes from a checkpoint,
    replays the checkpoint's log history into ``logger.on_log`` first, so the logger's curves start at
    step 1 as in an uninterrupted run, not at the resumed step."""

    def __init__(self, logger: TrainerCallback):
        self.logger = logger

    def on_train_begin(self, args, state, control, **kwargs):
        for logs in state.log_history if state.global_step else []:
            self.logger.on_log(args, state, control, logs={k: v for k, v in logs.items() if k != "step"}, **kwargs)


def with_replay(callbacks) -> list[TrainerCallback]:
    """``callbacks``, each preceded by its ``ReplayLogs``."""
    return [c for callback in callbacks for c in (ReplayLogs(callback), callback)]


def train(trainer, folder: str | Path | None) -> None:
    """``trainer.train()``, from the newest checkpoint in ``folder`` when there is one."""
    trainer.train(resume_from_checkpoint=last_checkpoint(folder))
