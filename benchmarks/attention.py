"""Benchmark (not a test): wall time of evaluation-shaped engine runs with dense attention against attention
by rows (``sml.dialogue.decoding``), per cell (domain x variant), the two interleaved in one process.

    PYTHONPATH=src python -m benchmarks.attention --threads 1 --tasks-per-cell 256 --repeats 2

Each run is what one evaluation cell's engine run does: ``--tasks-per-cell`` eval tasks, up to
``dialogue.eval_turns`` student turns, the pipeline's teacher and slots (``--settings``). Prints one line per
run (seconds, student tokens, ``bench.digest`` of its dialogues: equal digests, the same dialogues) and the
speed-up of the summed times.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.bench import digest, student_tokens
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
    parser.add_argument("--tasks-per-cell", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (an evaluation worker has one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = settings.load(args.settings)
    teacher, student = make_teacher(cfg.teacher), Student.load(args.model, dtype="float32")
    seconds = {"dense": 0.0, "by_rows": 0.0}
    for source in (cfg.evaluation.code_source, cfg.evaluation.math_source):
        tasks = list(load_tasks(args.tasks, source, "eval"))[:args.tasks_per_cell]
        for variant in cfg.evaluation.variants.split(","):
            for _ in range(args.repeats):
                for attention in seconds:
                    student.attention = attention
                    start = time.perf_counter()
                    dialogues = run_dialogues(tasks, student, teacher, cfg.dialogue, max_turns=cfg.dialogue.eval_turns,
                                              variant=variant, progress=False, seed=0)
                    took = time.perf_counter() - start
                    seconds[attention] += took
                    print(f"{source} {variant} {attention}: {took:.1f} s, {student_tokens(dialogues)} student tokens, "
                          f"dialogues {digest(dialogues)}", flush=True)
    print(f"summed: dense {seconds['dense']:.1f} s, by rows {seconds['by_rows']:.1f} s, "
          f"speed-up {seconds['dense'] / seconds['by_rows']:.2f}x")
    return seconds


if __name__ == "__main__":
    main()
