"""What batching evaluation cells saves: every cell of one student (domains x variants x seeds, n tasks each,
and the full cells' retry comparators) run cell by cell (``retry_comparator`` then ``evaluate``, as notebooks
03 and 08 used to) and in one engine run (``evaluate_cells``), alternated in one process. Prints each run's
wall seconds and student tokens per second, the ratio, the decoder's forward passes (decode steps and
prefills) and the attention work of its decode steps (rows x attended columns), and whether both gave the
same SR@k rows. On a CPU a step costs about its attention work; on a GPU, about one step whatever its rows.
With ``--workers N``, also cell by cell over N one-thread worker processes (``machine.workers``), against
cell by cell in this process with ``--threads`` threads: run it with ``--threads N --workers N`` on N cores.

Run: PYTHONPATH=src python scripts/bench_cells.py [--model models/base_student] [--tasks 64] [--seeds 3]
     [--batch-size 256] [--threads 2 --workers 2]
Without --model: a random model of base_student's size in params.yaml (~0.9M parameters) with a tokenizer
trained on toy tasks (a random model writes every turn to max_new_tokens and never solves anything).
"""
import argparse
import time

import torch

from sml import settings
from sml.dialogue import decoding
from sml.dialogue.student import Student
from sml.dialogue.teacher import ScriptedTeacher
from sml.evaluation.evaluate import Cell, evaluate, evaluate_cells, retry_comparator
from sml.tasks import toy_code, toy_math
from sml.train.base_model import build_model, train_tokenizer

def main():
    # everything runs here, not at import: the worker processes of --workers import this file again (spawn)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="a student folder (default: a random model, see above)")
    parser.add_argument("--tasks", type=int, default=64, help="tasks per domain (evaluation.n_tasks)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="alternated pairs of runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=0, help="dialogue.batch_size (default: params.yaml's)")
    parser.add_argument("--workers", type=int, default=0, help="also cell by cell over this many one-thread processes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg = settings.load("params.yaml")
    dialogue, chunk_tasks = cfg.dialogue, cfg.resume.chunk_tasks
    if args.batch_size:
        dialogue = dialogue.model_copy(update={"batch_size": args.batch_size})
    domains = {"math": toy_math.generate(args.tasks, 7), "code": toy_code.generate(args.tasks, 7)}
    if args.model:
        student = Student.load(args.model, dtype="float32")
    else:
        b = cfg.base_student
        texts = [t[k] for t in toy_math.generate(500, 0) + toy_code.generate(500, 0) for k in ("prompt", "solution")]
        tok = train_tokenizer(texts, vocab_size=b.vocab_size)
        student = Student(build_model(tok, b.hidden_size, b.num_layers, b.num_heads, b.num_kv_heads, b.intermediate_size,
                                      seed=0), tok, device="cpu")
    plan = {(domain, variant, seed): Cell(tasks, variant, seed, retries=variant == "full")
            for domain, tasks in domains.items() for variant in ("full", "sharded") for seed in range(args.seeds)}
    common = dict(condition="base", train_domain="none", chunk_tasks=chunk_tasks, progress=False)


    def per_cell():
        out = {}
        for key, cell in plan.items():
            retries = None
            if cell.retries:
                retries, *_ = retry_comparator(student, ScriptedTeacher(), cell.tasks, dialogue, seed=cell.seed,
                                               chunk_tasks=chunk_tasks, progress=False)
            data, rows, _ = evaluate(student, ScriptedTeacher(), cell.tasks, dialogue, variant=cell.variant,
                                     seed=cell.seed, retries=retries, **common)
            out[key] = data, rows, retries
        return out


    def batched():
        results = evaluate_cells(student, ScriptedTeacher(), plan, dialogue, **common)
        return {key: (r.data, r.rows, r.retries) for key, r in results.items()}


    def apart():
        results = evaluate_cells(student, ScriptedTeacher(), plan, dialogue, together=False, workers=args.workers, **common)
        return {key: (r.data, r.rows, r.retries) for key, r in results.items()}


    def student_tokens(results) -> int:
        """The student's tokens in every transcript (its turns re-encoded: the transcripts keep their text)."""
        return sum(len(student.encode(m["content"])) for data, _, retries in results.values()
                   for part in (data, retries or []) for record in part for m in record["messages"]
                   if m["role"] == "assistant")


    passes = {"decode": 0, "prefill": 0, "work": 0}
    forward = decoding.Decoder._forward


    def counted(decoder, rows, ids, write):
        out = forward(decoder, rows, ids, write)
        if ids.shape[1] == 1:
            passes["decode"] += 1
            passes["work"] += (rows if isinstance(rows, int) else len(rows)) * decoder.cache.width
        else:
            passes["prefill"] += 1
        return out


    decoding.Decoder._forward = counted


    def timed(fn):
        passes.update(decode=0, prefill=0, work=0)
        t = time.perf_counter()
        out = fn()
        return time.perf_counter() - t, out, dict(passes)


    n_params = sum(p.numel() for p in student.model.parameters())
    print(f"student {args.model or 'random'} ({n_params:,} parameters), {len(plan)} cells x {args.tasks} tasks, "
          f"{sum(c.retries for c in plan.values())} retry comparators x {dialogue.eval_turns} tries, eval_turns "
          f"{dialogue.eval_turns}, max_new_tokens {dialogue.max_new_tokens}, batch_size {dialogue.batch_size}, "
          f"chunk_tasks {chunk_tasks}, {args.threads} thread(s)", flush=True)
    for repeat in range(args.repeats):
        a, cells, pa = timed(per_cell)
        b, together, pb = timed(batched)
        same = all(cells[k][1].equals(together[k][1]) for k in plan)
        ta, tb = student_tokens(cells), student_tokens(together)
        print(f"repeat {repeat}: per cell {a:.1f} s ({ta / a:,.0f} student tokens/s), batched {b:.1f} s "
              f"({tb / b:,.0f} tokens/s): speed-up x{a / b:.2f}; same SR@k rows: {same}", flush=True)
        print(f"  decode steps {pa['decode']:,} -> {pb['decode']:,}, prefills {pa['prefill']:,} -> {pb['prefill']:,}, "
              f"decode attention work {pa['work'] / 1e6:,.0f}M -> {pb['work'] / 1e6:,.0f}M row-columns", flush=True)
        if args.workers > 1:
            c, spread, _ = timed(apart)
            same = all(cells[k][0].to_list() == spread[k][0].to_list() for k in plan)
            print(f"  over {args.workers} one-thread workers {c:.1f} s ({student_tokens(spread) / c:,.0f} tokens/s): "
                  f"x{a / c:.2f} against per cell in this process; same transcripts: {same}", flush=True)


if __name__ == "__main__":
    main()
