"""Independent groups of dialogues spread over one-thread worker processes (``machine.workers``).

On this 2-core CPU, two one-thread processes generate 1.44x the tokens of one two-thread process
(``benchmarks/threads.py``, ``metrics/threads.json``), and the teacher's and verifier's Python, which one
process runs on one core, runs on both. Each group still gets exactly the dialogues a run of its own gives it:
every dialogue samples from its own seeded stream, and a group is never split across processes.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pickle

import torch
from tqdm.auto import tqdm

from sml import resume

_shared: dict = {}  # in a worker: what every group of the run needs (student, teacher, settings)


def usable(student, workers: int, groups: int) -> bool:
    """Whether to spread ``groups`` over ``workers`` processes: more than one of each, and a student that
    samples in this process on a CPU (a served student or a GPU batches in one place already)."""
    return workers > 1 and groups > 1 and getattr(student, "device", None) == "cpu" and student.model is not None


def grouped_apart(groups: list, folders: list, workers: int, *, student, teacher, dialogue, chunk_tasks=None,
                  judge=None, progress: bool = True) -> list:
    """``resume.grouped_dialogues`` of each group alone (its ``folder`` as there), the groups shared out over
    ``workers`` spawned processes of one torch thread each, in order (the longest first, when they come so),
    or run one after another in this process where workers are not ``usable``. Returns one transcript dataset
    per group, in the groups' order (``progress``: a bar over finished groups)."""
    run = dict(student=student, teacher=teacher, dialogue=dialogue, chunk_tasks=chunk_tasks, judge=judge)
    if not usable(student, workers, len(groups)):
        return [resume.grouped_dialogues([group], folders=[folder], progress=progress, **run)[0]
                for group, folder in zip(groups, folders)]
    try:
        shared = pickle.dumps(run)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        raise ValueError(f"machine.workers: {workers} worker processes need a student, teacher and judge that can "
                         f"be sent to them ({e}); set machine.workers: 1 to run in this process") from e
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pool mid-use
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(groups)), mp_context=context,
                                                initializer=_start, initargs=(shared,)) as pool:
        runs = [pool.submit(_run, group, folder) for group, folder in zip(groups, folders)]
        for _ in tqdm(concurrent.futures.as_completed(runs), total=len(runs), desc=f"groups over {workers} workers",
                      unit="group", disable=not progress):
            pass
        return [run.result() for run in runs]


def _start(shared: bytes) -> None:
    torch.set_num_threads(1)
    _shared.update(pickle.loads(shared))


def _run(group, folder):
    [data] = resume.grouped_dialogues([group], folders=[folder], progress=False, **_shared)
    return data
