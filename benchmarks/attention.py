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


def cell_arguments(description: str, tasks_per_cell: int) -> argparse.ArgumentParser:
    """The arguments of a benchmark over evaluation cells: the student, the task sets, the settings, the size."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="models/base_student")
    parser.add_argument("--tasks", default="data/tasks")
    parser.add_argument("--settings", default="params.yaml")
    parser.add_argument("--tasks-per-cell", type=int, default=tasks_per_cell)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (an evaluation worker has one)")
    return parser


def evaluation_cells(args):
    """The pipeline's settings, its teacher, the student, and each evaluation cell as ``(source, variant,
    run)``: ``run()`` runs the cell's dialogues as evaluation does and returns them with the seconds taken."""
    cfg = settings.load(args.settings)
    teacher, student = make_teacher(cfg.teacher), Student.load(args.model, dtype="float32")

    def run(tasks, variant):
        start = time.perf_counter()
        dialogues = run_dialogues(tasks, student, teacher, cfg.dialogue, max_turns=cfg.dialogue.eval_turns,
                                  variant=variant, progress=False, seed=0)
        return dialogues, time.perf_counter() - start

    cells = [(source, variant, lambda tasks=tasks, variant=variant: run(tasks, variant))
             for source in (cfg.evaluation.code_source, cfg.evaluation.math_source)
             for tasks in [list(load_tasks(args.tasks, source, "eval"))[:args.tasks_per_cell]]
             for variant in cfg.evaluation.variants.split(",")]
    return student, cells


def main(argv=None) -> dict:
    parser = cell_arguments(__doc__.splitlines()[0], tasks_per_cell=256)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    student, cells = evaluation_cells(args)
    seconds = {"dense": 0.0, "by_rows": 0.0}
    for source, variant, run in cells:
        for _ in range(args.repeats):
            for attention in seconds:
                student.attention = attention
                dialogues, took = run()
                seconds[attention] += took
                print(f"{source} {variant} {attention}: {took:.1f} s, {student_tokens(dialogues)} student tokens, "
                      f"dialogues {digest(dialogues)}", flush=True)
    print(f"summed: dense {seconds['dense']:.1f} s, by rows {seconds['by_rows']:.1f} s, "
          f"speed-up {seconds['dense'] / seconds['by_rows']:.2f}x")
    return seconds


if __name__ == "__main__":
    main()
