"""Whether a change to the engine leaves its dialogues as they were: ``bench.digest`` of every evaluation
cell's dialogues (domain x variant, the pipeline's teacher and dialogue settings), with one torch thread.
Run it on two checkouts and compare the lines; equal digests in every cell are what lets a speed-up keep
the pipeline's results (``dvc commit -f`` then records only the new source hashes).

    PYTHONPATH=src python -m benchmarks.same_dialogues --out after.json      (this checkout)
    git worktree add /tmp/before HEAD && cd /tmp/before && PYTHONPATH=src python -m benchmarks.same_dialogues \
        --model $OLDPWD/models/base_student --tasks $OLDPWD/data/tasks --out before.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.bench import digest
from sml import settings
from sml.dialogue.engine import run_dialogues
from sml.dialogue.llm_teacher import make_teacher
from sml.dialogue.student import Student
from sml.tasks.build import load_tasks


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/base_student")
    parser.add_argument("--tasks", default="data/tasks")
    parser.add_argument("--settings", default="params.yaml")
    parser.add_argument("--tasks-per-cell", type=int, default=64)
    parser.add_argument("--out", default="", help="also write the digests here, as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = settings.load(args.settings)
    teacher, student = make_teacher(cfg.teacher), Student.load(args.model, dtype="float32")
    digests = {}
    for source in (cfg.evaluation.code_source, cfg.evaluation.math_source):
        tasks = list(load_tasks(args.tasks, source, "eval"))[:args.tasks_per_cell]
        for variant in cfg.evaluation.variants.split(","):
            start = time.perf_counter()
            dialogues = run_dialogues(tasks, student, teacher, cfg.dialogue, max_turns=cfg.dialogue.eval_turns,
                                      variant=variant, progress=False, seed=0)
            digests[f"{source}/{variant}"] = digest(dialogues)
            print(f"{source} {variant}: {digest(dialogues)} ({time.perf_counter() - start:.1f} s)", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(digests, f, indent=2)
    return digests


if __name__ == "__main__":
    main()
