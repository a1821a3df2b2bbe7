"""Benchmark (not a test): how should a stage use the machine's cores? One process with ``--cores`` threads
against ``--cores`` processes with one thread each, sharing the same work, for the two kinds of work the
pipeline does on the embedded student:

- generation: the engine's dialogues (scripted teacher, math tasks), student tokens per second;
- training: full-model AdamW steps on task chats (batch 16, as the finetuning stages), steps per second.

Each layout runs the same total work; the processes start together and the wall time of the slowest is
taken. The layouts alternate over ``--repeats`` repetitions and the median is reported, as a ratio of
throughputs measured in the same run (the machines are shared and noisy).

    python -m benchmarks.threads --model models/base_student --tasks data/tasks --out metrics/threads.json
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

from sml.settings import cores

from .bench import engine_settings, report, student_tokens


def _work(kind: str, model: str, task_dir: str, share: int, threads: int, seed: int, queue) -> None:
    """One process: ``threads`` torch threads, ``share`` dialogues (generation) or steps (training)."""
    import torch

    torch.set_num_threads(threads)
    from sml.dialogue.engine import run_dialogues
    from sml.dialogue.student import Student
    from sml.dialogue.teacher import ScriptedTeacher
    from sml.tasks.build import load_tasks

    student = Student.load(model, dtype="float32")
    tasks = list(load_tasks(task_dir, "toy_math", "train"))
    if kind == "generation":
        chosen = tasks[seed * share:(seed + 1) * share]
        start = time.perf_counter()
        dialogues = run_dialogues(chosen, student, ScriptedTeacher(), engine_settings(64, 1.0, 64), max_turns=4,
                                  progress=False, seed=seed)
        queue.put((student_tokens(dialogues), time.perf_counter() - start))
        return
    from sml.train.sft import chat

    tokenizer, model_ = student.tokenizer, student.model.train()
    optimizer = torch.optim.AdamW(model_.parameters(), lr=1e-4)
    texts = [tokenizer.apply_chat_template(chat(t), tokenize=False) for t in tasks]
    start = time.perf_counter()
    for step in range(share):
        batch = tokenizer(texts[(seed * share + step) * 16:(seed * share + step + 1) * 16], return_tensors="pt",
                          padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model_(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    queue.put((share, time.perf_counter() - start))


def layout(kind: str, model: str, task_dir: str, total: int, processes: int, threads: int) -> float:
    """Throughput (units per wall second) of ``processes`` processes of ``threads`` threads sharing ``total``."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_work, args=(kind, model, task_dir, total // processes, threads, i, queue))
               for i in range(processes)]
    for w in workers:
        w.start()
    results = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    return sum(units for units, _ in results) / max(seconds for _, seconds in results)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/base_student")
    parser.add_argument("--tasks", default="data/tasks")
    parser.add_argument("--cores", type=int, default=cores())
    parser.add_argument("--dialogues", type=int, default=128, help="generation work, shared by the processes")
    parser.add_argument("--steps", type=int, default=16, help="training work, shared by the processes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="metrics/threads.json")
    args = parser.parse_args(argv)
    if args.cores < 2:
        raise SystemExit(f"--cores {args.cores}: nothing to compare on one core")
    result = {}
    for kind, total in (("generation", args.dialogues), ("training", args.steps)):
        threaded, split = [], []
        for _ in range(args.repeats):
            threaded.append(layout(kind, args.model, args.tasks, total, 1, args.cores))
            split.append(layout(kind, args.model, args.tasks, total, args.cores, 1))
        # four significant figures, not decimals: at tiny sizes a rate may be well below 1 (steps/s)
        result[kind] = {f"one_process_{args.cores}_threads": float(f"{statistics.median(threaded):.4g}"),
                        f"{args.cores}_processes_1_thread": float(f"{statistics.median(split):.4g}"),
                        "processes_vs_threads": round(statistics.median(s / t for s, t in zip(split, threaded)), 3),
                        "unit": "student tokens/s" if kind == "generation" else "training steps/s (batch 16)"}
    result["setup"] = {"cores": args.cores, "dialogues": args.dialogues, "steps": args.steps,
                       "repeats": args.repeats, "model": args.model}
    return report(result, args.out)


if __name__ == "__main__":
    main()
