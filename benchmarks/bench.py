"""Benchmark (not a test): student tokens/s of the dialogue engine against raw batched ``generate`` and
against a naive loop that runs one dialogue at a time, all measured in one process, one after another.

    python -m benchmarks.bench --model models/base_student --out metrics/bench.json   (what `make bench` runs)

- engine: ``n_dialogues`` math dialogues x ``turns`` student turns with the scripted teacher, in ``batch_size``
  slots (continuous batching: with more dialogues than slots, as in an evaluation cell of 256 tasks in 64 slots,
  a dialogue that ends frees its slot for the next);
- raw: ``generate`` on the same opening prompts in batches of ``batch_size``, forced to the engine's mean
  turn length (``min_new_tokens = max_new_tokens``), once per engine round: the same number of student
  tokens with none of the engine's work (no teacher, no bookkeeping, no ragged turn lengths);
- naive: the same dialogues, one at a time (batch size 1), through the same engine.
Each is measured ``repeats`` times and the median taken (the machines are shared and noisy); ``ratio_vs_naive``
is the median of each repetition's engine over its naive loop (``ratio_vs_naive_runs``: each); the engine
runs with its forward passes timed (two clock reads per pass). ``engine_breakdown`` splits the last engine
run into prefill (openings and teacher replies), decode steps and everything else (teacher, verifier,
bookkeeping).

``ratio_vs_raw_bound``: the ratio to raw of an engine that does only the forward passes no engine which
reads the teacher can skip, from this run's measurements. It decodes the student's tokens as fast as raw
``generate`` does (raw's time less its prefills of the openings, ``raw_prefill_s`` each: a one-token
``generate``), prefills the openings once, and prefills the teacher's replies; nothing else (no teacher,
verifier, bookkeeping, ragged turn ends or longer contexts). The replies' prefill is taken three ways:
as this engine measured it, without its padding (scaled by real / padded tokens), and at raw's prefill
cost per opening token (replies attend to longer contexts, so this one is the most generous).

``engine_vs_bound``: the engine's tokens/s over that zero-overhead engine's, replies as prefilled, i.e. the
seconds the bound needs for the engine's tokens over the seconds the engine took; per repetition from that
repetition's engine run, raw run and raw prefill, median over repetitions (``engine_vs_bound_runs``: each).

``grpo_vs_trl_single_turn`` (``grpo_vs_trl``): seconds per step of our multi-turn GRPO over TRL's own
single-turn ``GRPOTrainer`` generating as many student tokens per conversation; per repetition from that
repetition's two runs, median over repetitions (``grpo_vs_trl_runs``: each).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import platform
import statistics
import time
from pathlib import Path
from unittest import mock

import torch

from sml import settings
from sml.dialogue import decoding
from sml.dialogue.decoding import ATTENTION, Decoder
from sml.dialogue.engine import run_dialogues
from sml.dialogue.student import Student, left_pad
from sml.tasks.build import load_tasks
from sml.dialogue.llm_teacher import make_teacher
from sml.dialogue.teacher import ScriptedTeacher


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _forced(student: Student, prompts: list[list[int]], length: int, temperature: float,
            batch: int | None = None) -> None:
    """Raw batched ``generate`` calls, ``batch`` prompts each (None: all in one), producing exactly ``length``
    tokens per prompt."""
    batch = batch or len(prompts)
    for first in range(0, len(prompts), batch):
        ids, mask = left_pad(prompts[first:first + batch], student.pad_id)
        with torch.no_grad():
            student.model.generate(input_ids=ids.to(student.device), attention_mask=mask.to(student.device),
                                   do_sample=True, temperature=temperature, min_new_tokens=length,
                                   max_new_tokens=length, pad_token_id=student.pad_id)


def forward_breakdown(student: Student, fn) -> dict:
    """Run ``fn`` while timing every forward pass of the student's decoders (``Decoder._forward``, mask included;
    a hook on the model would switch off the decoder's lean pass): prefills (several new tokens per row:
    openings, then each teacher reply) vs decode steps (one token per row), and how many decode steps ran with
    fewer than 8 rows left (the ragged tail of a round)."""
    calls = []
    forward = Decoder._forward

    def timed(decoder, rows, ids, write):
        start = time.perf_counter()
        logits = forward(decoder, rows, ids, write)
        # a call reads a cached past when positions run beyond its width
        calls.append([tuple(ids.shape), time.perf_counter() - start, int(write.max()) >= ids.shape[1]])
        return logits

    with mock.patch.object(Decoder, "_forward", timed):
        start = time.perf_counter()
        fn()
        total = time.perf_counter() - start
    prefill = [c for c in calls if c[0][1] > 1]
    decode = [c for c in calls if c[0][1] == 1]
    replies = [c for c in prefill if c[2]]  # prefills on top of a past: the teacher's replies
    return {"total_s": round(total, 3), "prefill_calls": len(prefill), "prefill_s": round(sum(c[1] for c in prefill), 3),
            "prefill_shapes": [list(c[0]) for c in prefill],
            "opening_prefill_s": round(sum(c[1] for c in prefill if not c[2]), 4),
            "reply_prefill_s": round(sum(c[1] for c in replies), 4),
            "reply_prefill_padded_tokens": sum(c[0][0] * c[0][1] for c in replies), "decode_steps": len(decode),
            "decode_s": round(sum(c[1] for c in decode), 3),
            "decode_steps_below_8_rows": sum(c[0][0] < 8 for c in decode),
            "other_s": round(total - sum(c[1] for c in calls), 3)}


def student_tokens(dialogues) -> int:
    return sum(len(ids) for d in dialogues for ids in d.student_ids)


def digest(dialogues) -> str:
    """A hash of every dialogue's whole state (tokens, messages, verdicts, leaks, labels; not its random
    stream): equal digests, the same dialogues."""
    state = [{k: v for k, v in sorted(vars(d).items()) if k != "stream"} for d in dialogues]
    as_json = lambda value: sorted(value) if isinstance(value, set) else str(value)
    return hashlib.sha256(json.dumps(state, default=as_json).encode()).hexdigest()[:16]


def reply_tokens(dialogues) -> int:
    """Tokens the student reads between its turns (the teacher's reply and the chat template around it)."""
    return sum(d.turn_starts[r] - d.turn_starts[r - 1] - len(d.student_ids[r - 1])
               for d in dialogues for r in range(1, d.turns))


def bound_seconds(tokens: int, raw_tokens: int, raw_s: float, raw_prefill_s: float, rounds: int,
                  reply_prefill_s: float) -> float | None:
    """Seconds the zero-overhead engine (see the module docstring) needs for ``tokens`` student tokens: decoding
    at raw ``generate``'s speed (raw's time less its ``rounds`` prefills of the openings), the openings prefilled
    once, the replies prefilled in ``reply_prefill_s``; None when raw is all prefill (turns of a token or two)."""
    decode_s = raw_s - rounds * raw_prefill_s
    return tokens * decode_s / raw_tokens + raw_prefill_s + reply_prefill_s if decode_s > 0 else None


def ratio_bound(tokens: int, raw: list[tuple[int, float]], raw_prefill_s: float, opening_tokens: int, rounds: int,
                breakdown: dict, replies: int, raw_rate: float) -> dict:
    """Ratios to raw ``generate`` of engines that do nothing but the unavoidable forward passes (see the module
    docstring), prefilling the teacher's replies (a) as this engine did, (b) the same without padding
    (scaled by real / padded tokens), (c) at raw ``generate``'s prefill cost per opening token."""
    raw_tokens, raw_s = raw[0][0], statistics.median(s for _, s in raw)
    extra = {"raw_prefill_s": round(raw_prefill_s, 4), "reply_tokens": replies}
    if bound_seconds(tokens, raw_tokens, raw_s, raw_prefill_s, rounds, 0) is None:
        return {"ratio_vs_raw_bound": None, **extra}
    measured = breakdown["reply_prefill_s"]
    ratio = lambda seconds: round(
        tokens / bound_seconds(tokens, raw_tokens, raw_s, raw_prefill_s, rounds, seconds) / raw_rate, 3)
    return {"ratio_vs_raw_bound": {
        "replies_as_prefilled": ratio(measured),
        "replies_unpadded": ratio(measured * replies / max(breakdown["reply_prefill_padded_tokens"], 1)),
        "replies_at_opening_cost": ratio(raw_prefill_s * replies / opening_tokens)}, **extra}


def engine_settings(max_new_tokens: int, temperature: float, batch_size: int) -> settings.Dialogue:
    """The engine's settings in a benchmark run: sampling as asked, the leak audit on, as in the pipeline."""
    return settings.Dialogue(gamma=0.7, train_turns=4, eval_turns=10, temperature=temperature, top_p=1.0,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, shard_reveal="every_turn",
                             block_leaks=True)


def bench(student: Student, tasks, n_dialogues: int = 64, turns: int = 4, max_new_tokens: int = 96,
          temperature: float = 1.0, repeats: int = 3, seed: int = 0, naive_dialogues: int | None = None,
          batch_size: int | None = None, teacher: ScriptedTeacher | None = None) -> dict:
    """The measurements described above; ``batch_size`` slots (None: one per dialogue); ``naive_dialogues`` runs
    the naive loop on only the first that many dialogues (its rate, tokens/s, from a subset: the whole loop is
    slow for big batches on a GPU); ``teacher``: the scripted teacher (None: its defaults)."""
    batch_size = batch_size or n_dialogues
    tasks = list(tasks)[:n_dialogues]
    if len(tasks) < n_dialogues:
        raise ValueError(f"bench: {n_dialogues} dialogues asked for but only {len(tasks)} tasks available")
    teacher = teacher or ScriptedTeacher()
    common = dict(max_turns=turns, progress=False, seed=seed)
    batched, one = (engine_settings(max_new_tokens, temperature, batch) for batch in (batch_size, 1))
    run_dialogues(tasks[:8], student, teacher, batched, **common)  # warm-up

    # each repetition: the engine (its forward passes timed), then raw generate forced to its token count (a) on
    # the opening prompts, (b) on the very contexts the engine fed to each of its rounds (same prompts, same batch
    # sizes, same tokens per round), then raw's own prefill (a one-token generate on the openings), then the naive
    # loop
    engine, raw, raw_same, raw_prefill, vs_bound, naive, vs_naive = [], [], [], [], [], [], []
    for _ in range(repeats):
        dialogues = []
        breakdown = forward_breakdown(student, lambda: dialogues.extend(run_dialogues(tasks, student, teacher, batched,
                                                                                      **common)))
        tokens, rounds = student_tokens(dialogues), max(d.turns for d in dialogues)
        engine.append((tokens, breakdown["total_s"]))
        per_turn = max(1, round(tokens / (n_dialogues * rounds)))
        openings = [d.ids[:d.turn_starts[0]] for d in dialogues]
        same_rounds = [[d.ids[:d.turn_starts[r]] for d in dialogues if d.turns > r] for r in range(rounds)]
        round_tokens = [sum(len(d.student_ids[r]) for d in dialogues if d.turns > r) for r in range(rounds)]
        raw.append((n_dialogues * per_turn * rounds, _timed(lambda: [
            _forced(student, openings, per_turn, temperature, batch_size) for _ in range(rounds)])[1]))
        raw_same.append((sum(round_tokens), _timed(lambda: [
            _forced(student, batch, max(1, round(n / len(batch))), temperature, batch_size)
            for batch, n in zip(same_rounds, round_tokens)])[1]))
        raw_prefill.append(_timed(lambda: _forced(student, openings, 1, temperature, batch_size))[1])
        bound_s = bound_seconds(tokens, *raw[-1], raw_prefill[-1], rounds, breakdown["reply_prefill_s"])
        vs_bound.append(round(bound_s / breakdown["total_s"], 3) if bound_s is not None else None)
        alone, seconds = _timed(lambda: [d for t in tasks[:naive_dialogues] for d in run_dialogues(
            [t], student, teacher, one, **common)])
        naive.append((student_tokens(alone), seconds))
        vs_naive.append(round(engine[-1][0] / engine[-1][1] / (naive[-1][0] / naive[-1][1]), 3))

    rate = lambda runs: statistics.median(t / s for t, s, *_ in runs)
    engine_rate, raw_rate, naive_rate, same_rate = rate(engine), rate(raw), rate(naive), rate(raw_same)
    bound = ratio_bound(tokens, raw, statistics.median(raw_prefill), sum(map(len, openings)), rounds, breakdown,
                        reply_tokens(dialogues), raw_rate)
    measured = [v for v in vs_bound if v is not None]
    return {"engine_tokens_per_s": round(engine_rate, 1), "raw_generate_tokens_per_s": round(raw_rate, 1),
            "raw_generate_same_contexts_tokens_per_s": round(same_rate, 1),
            "ratio_vs_raw_same_contexts": round(engine_rate / same_rate, 3),
            "naive_tokens_per_s": round(naive_rate, 1), "ratio_vs_raw": round(engine_rate / raw_rate, 3),
            "ratio_vs_naive": statistics.median(vs_naive), "ratio_vs_naive_runs": vs_naive, **bound,
            "engine_vs_bound": statistics.median(measured) if measured else None, "engine_vs_bound_runs": vs_bound,
            "engine_breakdown": breakdown,
            "setup": {"dialogues": n_dialogues, "batch_size": batch_size, "turns": turns, "domain": "math",
                      "teacher": "scripted, restating" if teacher.restate else "scripted",
                      "engine_student_tokens": tokens, "engine_rounds": rounds,
                      "naive_dialogues": len(tasks[:naive_dialogues]), "raw_tokens_per_turn": per_turn,
                      "max_new_tokens": max_new_tokens, "temperature": temperature, "repeats": repeats,
                      "attention": student.attention,
                      "forward": "model's own" if decoding.lean_forward(student.model) is None else "lean",
                      "device": str(student.device), "torch_threads": torch.get_num_threads(),
                      "parameters": sum(p.numel() for p in student.model.parameters()),
                      "machine": platform.machine(), "python": platform.python_version()}}


def _step_seconds(history: list[dict]) -> float:
    """Median seconds per optimiser step from TRL's ``step_time`` (rollout, forward, backward, optimiser), the
    first step left out (warm-up) when there are more."""
    times = [h["step_time"] for h in history if "step_time" in h]
    return statistics.median(times[1:] or times)


def grpo_vs_trl(student: Student, tasks, *, steps: int = 4, tasks_per_step: int = 4, group_size: int = 8,
                turns: int = 4, max_new_tokens: int = 64, micro_batch: int = 0,
                teacher: ScriptedTeacher | None = None, repeats: int = 1) -> dict:
    """Seconds per step of our multi-turn GRPO (``grpo.train``: engine rollouts with the scripted teacher) over
    TRL's own single-turn ``GRPOTrainer`` generating as many tokens per conversation as our student did (each
    completion forced to that length with ``min_new_tokens``), each on a copy of the student with a fresh LoRA
    adapter (r=16), one after the other in this process; median over steps. TRL's reward is a constant (only cost
    is measured). Our step also trains on the teacher's tokens in the conversation (masked from the loss). Both
    pass ``micro_batch`` conversations through each forward/backward (0: the whole step at once). Each of
    ``repeats`` repetitions runs both, right after each other, and gives one ratio; the result is their median
    (a slow spell of the shared machine then weighs on both sides of a ratio, not on one side of the median)."""
    import copy
    import tempfile

    import datasets
    from trl import GRPOTrainer

    from sml.train import grpo, sft

    if repeats < 1:
        raise ValueError(f"grpo_vs_trl: repeats must be at least 1, got {repeats}")
    tasks = list(tasks)
    finetune = settings.Finetune(lora_r=16, lora_alpha=32, lora_dropout=0.0, epochs=1.0, batch_size=1, lr=1e-5)
    online = settings.OnlineSML(init="base", n_tasks=len(tasks), steps=steps, tasks_per_step=tasks_per_step,
                                group_size=group_size, lr=1e-5, credit="conversation", beta=0.0, micro_batch=micro_batch)
    generation = settings.Generation(grpo="engine", vllm_mode="colocate", vllm_server_url="", vllm_gpu_memory=0.3,
                                     eval="local", eval_base_url="", eval_api_key_env="OPENAI_API_KEY")
    prompts = datasets.Dataset.from_dict({"prompt": [[{"role": "user", "content": t["prompt"]}] for t in tasks]})

    def once() -> tuple[float, float, int, float]:
        """One repetition: our seconds per step, TRL's, our sampled tokens per conversation, TRL's."""
        sampled = []  # tokens our student sampled per conversation (its end-of-turn tokens included), per rollout

        def counted(*args, **kwargs):
            dialogues = run_dialogues(*args, **kwargs)
            sampled.append(sum(len(ids) + 1 for d in dialogues for ids in d.student_ids) / len(dialogues))
            return dialogues

        ours = sft.add_adapter(copy.deepcopy(student.model), finetune, seed=0)
        with tempfile.TemporaryDirectory() as out_dir, mock.patch.object(grpo, "run_dialogues", counted):
            history = grpo.train(ours, student.tokenizer, tasks, teacher or ScriptedTeacher(), out_dir, online,
                                 engine_settings(max_new_tokens, 1.0, 64), generation, seed=0, max_turns=turns)
        length = max(1, round(statistics.mean(sampled)))
        theirs = sft.add_adapter(copy.deepcopy(student.model), finetune, seed=0)
        with tempfile.TemporaryDirectory() as out_dir:
            config = grpo.grpo_config(out_dir, online, seed=0)
            config.max_completion_length, config.generation_kwargs = length, {"min_new_tokens": length}
            trainer = GRPOTrainer(model=theirs, reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                                  args=config, processing_class=student.tokenizer, train_dataset=prompts)
            trainer.train()
        log = trainer.state.log_history
        return (_step_seconds(history), _step_seconds(log), length,
                statistics.mean(h["completions/mean_length"] for h in log if "completions/mean_length" in h))

    runs = [once() for _ in range(repeats)]
    ratios = [round(ours_s / trl_s, 3) for ours_s, trl_s, *_ in runs]
    return {"grpo_vs_trl_single_turn": statistics.median(ratios), "grpo_vs_trl_runs": ratios,
            "grpo": {"ours_s_per_step": round(statistics.median(r[0] for r in runs), 3),
                     "trl_single_turn_s_per_step": round(statistics.median(r[1] for r in runs), 3),
                     "runs_s_per_step": [[round(r[0], 3), round(r[1], 3)] for r in runs],
                     "sampled_tokens_per_conversation": runs[-1][2], "trl_completion_tokens": runs[-1][3],
                     "steps": steps, "tasks_per_step": tasks_per_step, "group_size": group_size, "turns": turns,
                     "max_new_tokens": max_new_tokens, "lora_r": 16, "micro_batch": micro_batch, "repeats": repeats}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/base_student")
    parser.add_argument("--tasks", default="data/tasks", help="folder of the task sets (the 'tasks' stage)")
    parser.add_argument("--source", default="toy_math")
    parser.add_argument("--dialogues", type=int, default=256, help="as an evaluation cell (256 dev tasks)")
    parser.add_argument("--batch-size", type=int, default=64, help="engine slots and raw generate's batch "
                        "(dialogue.batch_size)")
    parser.add_argument("--naive-dialogues", type=int, default=64, help="the naive loop's rate from the first N")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)  # as dialogue.max_new_tokens
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attention", choices=ATTENTION, default=Student.attention,
                        help="how the engine's decoder runs attention (sml.dialogue.decoding)")
    parser.add_argument("--forward", choices=("lean", "model"), default="lean",
                        help="the decoder's forward pass: its lean replay where it applies, or the model's own")
    parser.add_argument("--out", default="metrics/bench.json")
    parser.add_argument("--settings", default="params.yaml", help="the pipeline's settings: the teacher as the "
                        "pipeline builds it (teacher section; scripted only)")
    parser.add_argument("--grpo-steps", type=int, default=4, help="GRPO steps for grpo_vs_trl_single_turn (0: skip)")
    parser.add_argument("--grpo-micro-batch", type=int, default=None, help="conversations per forward/backward in "
                        "both GRPO runs (default: --settings' online_sml.micro_batch; 0: the step at once)")
    args = parser.parse_args(argv)
    if not Path(args.model).exists():
        raise SystemExit(f"--model {args.model}: not found; run the pipeline first (make repro, or dvc repro base_student)")
    cfg = settings.load(args.settings)
    if cfg.teacher.kind != "scripted":
        raise SystemExit(f"--settings {args.settings}: teacher.kind is {cfg.teacher.kind!r}; the bench measures "
                         "the engine with the scripted teacher (an LLM teacher's cost is not the engine's)")
    teacher = make_teacher(cfg.teacher)
    micro_batch = cfg.online_sml.micro_batch if args.grpo_micro_batch is None else args.grpo_micro_batch
    student = Student.load(args.model, dtype="float32")
    student.attention = args.attention
    tasks = load_tasks(args.tasks, args.source, "eval")
    own = mock.patch.object(decoding, "lean_forward", lambda model: None)  # the decoders call the model itself
    with own if args.forward == "model" else contextlib.nullcontext():
        result = bench(student, tasks, args.dialogues, args.turns, args.max_new_tokens, repeats=args.repeats,
                       naive_dialogues=args.naive_dialogues, batch_size=args.batch_size, teacher=teacher)
        if args.grpo_steps:
            result.update(grpo_vs_trl(student, load_tasks(args.tasks, args.source, "train"), steps=args.grpo_steps,
                                      turns=args.turns, max_new_tokens=args.max_new_tokens,
                                      micro_batch=micro_batch, teacher=teacher, repeats=args.repeats))
    return report(result, args.out)


def report(result: dict, out: str) -> dict:
    """Write a benchmark's ``result`` to ``out`` as JSON, show it, and return it."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
