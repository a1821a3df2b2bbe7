"""GPU benchmark (not a test): the engine's student tokens/s and GRPO seconds per step for students shaped
like Qwen2.5-0.5B/1.5B-Instruct (their real configs, random weights: nothing is downloaded), bf16 + sdpa.

    PYTHONPATH=src python -m benchmarks.bench_gpu --out metrics/bench_gpu.json

Random weights measure cost, not behaviour. What that takes:
- vocabulary: the model keeps the real 151,936-wide embedding and head (so the head matmul, the sampling
  softmax and GRPO's log-softmax cost what they would), paired with our own small tokenizer; a hook on the
  head pushes every id the tokenizer lacks to -1e4, so only real tokens are ever sampled.
- turn length: among ~1k tokens a random model almost never picks end-of-turn, so every turn would run to
  ``max_new_tokens``; the same hook sets the end-of-turn logit so that its probability is ``--eos-prob`` per
  token at temperature 1 (geometric turn lengths, mean ~1/p, cut at ``max_new_tokens``): the ragged batches
  the engine is built for. Answers are never right, so every dialogue runs all ``--turns`` turns.
- naive loop: one dialogue at a time on every dialogue would take ~15 min a repeat at 256 on a GPU (an
  estimate), so it runs on the first ``--naive-dialogues`` only (``bench.bench(naive_dialogues=...)``).
- GRPO: ``grpo.train`` as the pipeline runs it; base weights bf16, LoRA weights fp32 (peft upcasts adapters),
  and on a GPU ``bf16=True`` (autocast).
Results are merged into ``--out`` by model, so the models can be run as separate commands.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

from benchmarks import bench
from sml import settings
from sml.train.base_model import train_tokenizer
from sml.dialogue.student import Student, load_tokenizer
from sml.tasks import toy_math
from sml.dialogue.teacher import ScriptedTeacher

CONFIGS = "configs/models/qwen2.5-0.5b.json,configs/models/qwen2.5-1.5b.json"
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64)


def load_config(path: str, tiny_vocab: int | None = None):
    """A ``config.json`` as a transformers config; ``tiny_vocab`` shrinks it to a one-layer model of that
    vocabulary (the CPU plumbing test)."""
    data = json.loads(Path(path).read_text())
    if tiny_vocab:
        data.update(TINY, vocab_size=tiny_vocab, bos_token_id=None, eos_token_id=None)  # build_model sets ours
    return AutoConfig.for_model(data.pop("model_type"), **data)


def tokenizer_for_bench(path: str | None):
    """The pipeline's tokenizer if it has been built, else one trained here on toy math (a few seconds)."""
    if path and Path(path, "tokenizer.json").exists():
        return load_tokenizer(path), path
    tasks = toy_math.generate(500, 0)
    texts = [t["prompt"] for t in tasks] + [t["solution"] for t in tasks] + [s for t in tasks for s in t["shards"]]
    tokenizer = train_tokenizer(texts, vocab_size=1024)  # toy math alone has fewer merges: ~350 tokens
    return tokenizer, f"trained here on toy_math ({len(tokenizer)} tokens)"


def restrict_vocab(model, n_tokens: int, eos_id: int, eos_prob: float) -> None:
    """Sample only ids below ``n_tokens`` (the tokenizer's) and end a turn with probability ``eos_prob`` per
    token: a hook on the output head, so sampling, ``generate`` and GRPO's log-probs all see the same policy."""
    head = model.get_output_embeddings()
    if eos_id >= n_tokens or not 0 <= eos_prob < 1:
        raise ValueError(f"restrict_vocab: eos id {eos_id} must be below {n_tokens}, eos_prob {eos_prob} in [0, 1)")
    outside = torch.zeros(head.out_features)
    outside[n_tokens:] = -1e4  # finite: -inf would make TRL's entropy 0 * -inf = nan
    odds = math.log(eos_prob / (1 - eos_prob)) if eos_prob else None
    on_device = {}  # per (device, dtype): no host-to-device copy at every decode step

    def hook(module, args, logits):
        key = (logits.device, logits.dtype)
        if key not in on_device:
            on_device[key] = outside.to(logits.device, logits.dtype)
        # in place: GRPO's logits are (batch x conversation x 151936), GBs; the head's backward needs only its inputs
        logits.add_(on_device[key])
        if odds is not None:
            logits[..., eos_id] = -1e4
            with torch.no_grad():  # a constant: gradients flow through the other logits as usual
                rest = logits.logsumexp(-1)
            logits[..., eos_id] = rest + odds
        return logits

    head.register_forward_hook(hook)


def build_model(config, tokenizer, device: str, dtype: torch.dtype, eos_prob: float, seed: int = 0):
    """A randomly initialised model from ``config``, created directly on ``device`` (initialising 1.5B
    parameters on the CPU takes longer than the benchmark), its special tokens set to the tokenizer's."""
    eos, pad = tokenizer.convert_tokens_to_ids(tokenizer.eos_token), tokenizer.pad_token_id
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    for c in (model.config, model.generation_config):
        c.eos_token_id, c.pad_token_id, c.bos_token_id = eos, pad, None
    restrict_vocab(model, len(tokenizer), eos, eos_prob)
    return model


def time_grpo(model, tokenizer, tasks, *, steps: int, tasks_per_step: int, group_size: int, max_turns: int,
              max_new_tokens: int, bf16: bool) -> dict:
    """A few ``grpo.train`` steps on a fresh LoRA adapter; seconds per step from TRL's ``step_time`` (rollout,
    forward, backward and optimiser step), the first step left out of the mean when there are more."""
    from sml.train import grpo, sft  # here: trl is needed only when GRPO is timed (--grpo-steps 0 runs without it)

    finetune = settings.Finetune(lora_r=16, lora_alpha=32, lora_dropout=0.0, epochs=1.0, batch_size=1, lr=1e-5)
    online = settings.OnlineSML(init="base", n_tasks=len(tasks), steps=steps, tasks_per_step=tasks_per_step,
                                group_size=group_size, lr=1e-5, credit="conversation", beta=0.0, micro_batch=0)
    generation = settings.Generation(grpo="engine", vllm_mode="colocate", vllm_server_url="", vllm_gpu_memory=0.3,
                                     eval="local", eval_base_url="", eval_api_key_env="OPENAI_API_KEY")
    model = sft.add_adapter(model, finetune, seed=0)
    with tempfile.TemporaryDirectory() as out_dir:
        start = time.perf_counter()
        history = grpo.train(model, tokenizer, tasks, ScriptedTeacher(), out_dir, online,
                             bench.engine_settings(max_new_tokens, 1.0, 64), generation, seed=0, max_turns=max_turns,
                             bf16=bf16)
        wall = time.perf_counter() - start
    times = [h["step_time"] for h in history if "step_time" in h]
    warm = times[1:] or times
    lengths = [h["completions/mean_length"] for h in history if "completions/mean_length" in h]
    return {"s_per_step": round(statistics.mean(warm), 3) if warm else round(wall / steps, 3),
            "step_time_s": [round(t, 3) for t in times], "wall_s_including_setup": round(wall, 1),
            "steps": steps, "tasks_per_step": tasks_per_step, "group_size": group_size, "max_turns": max_turns,
            "max_new_tokens": max_new_tokens, "lora_r": 16, "mean_conversation_tokens": lengths,
            "precision": f"{model.base_model.model.dtype} weights, fp32 LoRA, GRPOConfig bf16={bf16}"}


def bench_model(path: str, tokenizer, args, device: str) -> dict:
    config = load_config(path, tiny_vocab=len(tokenizer) if args.tiny else None)
    dtype = torch.float32 if args.fp32 else torch.bfloat16
    model = build_model(config, tokenizer, device, dtype, args.eos_prob)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"[bench_gpu] {path}: {parameters / 1e6:.1f}M parameters, {dtype}, on {device}", flush=True)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tasks = toy_math.generate(args.dialogues, 1)
    naive = min(args.naive_dialogues, args.dialogues)
    start = time.perf_counter()
    result = bench.bench(Student(model, tokenizer, device), tasks, args.dialogues, args.turns, args.max_new_tokens,
                         repeats=args.repeats, naive_dialogues=naive)
    print(f"[bench_gpu] engine {result['engine_tokens_per_s']} tok/s, raw {result['raw_generate_tokens_per_s']} "
          f"tok/s, ratio {result['ratio_vs_raw']} ({time.perf_counter() - start:.0f} s)", flush=True)
    setup = result["setup"]
    entry = {"config": path, "parameters": parameters, "dtype": str(dtype).removeprefix("torch."), "attention": "sdpa",
             **{k: result[k] for k in ("engine_tokens_per_s", "raw_generate_tokens_per_s", "ratio_vs_raw",
                                       "raw_generate_same_contexts_tokens_per_s", "ratio_vs_raw_same_contexts",
                                       "naive_tokens_per_s", "ratio_vs_naive", "ratio_vs_raw_bound",
                                       "engine_vs_bound")},
             "mean_student_turn_tokens": round(setup["engine_student_tokens"]
                                               / (args.dialogues * setup["engine_rounds"]), 1),
             "naive_dialogues": naive, "bench": result}
    if args.grpo_steps:
        train_tasks = toy_math.generate(max(64, args.grpo_tasks_per_step), 2)
        entry["grpo"] = time_grpo(model, tokenizer, train_tasks, steps=args.grpo_steps,
                                  tasks_per_step=args.grpo_tasks_per_step, group_size=args.grpo_group_size,
                                  max_turns=args.turns, max_new_tokens=args.max_new_tokens,
                                  bf16=device == "cuda" and dtype == torch.bfloat16)
        print(f"[bench_gpu] GRPO {entry['grpo']['s_per_step']} s/step", flush=True)
    if device == "cuda":
        entry["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return entry


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="metrics/bench_gpu.json")
    parser.add_argument("--configs", default=CONFIGS, help="comma-separated config.json paths")
    parser.add_argument("--tokenizer", default="models/base_student", help="trained here when absent")
    parser.add_argument("--dialogues", type=int, default=256)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-dialogues", type=int, default=8, help="the naive loop runs on this many (>= 1)")
    parser.add_argument("--eos-prob", type=float, default=0.02, help="per-token end-of-turn probability (0: never)")
    parser.add_argument("--grpo-steps", type=int, default=3, help="0 skips GRPO")
    parser.add_argument("--grpo-tasks-per-step", type=int, default=4)
    parser.add_argument("--grpo-group-size", type=int, default=8)
    parser.add_argument("--fp32", action="store_true", help="float32 instead of bf16")
    parser.add_argument("--allow-cpu", action="store_true", help="run without CUDA (plumbing only)")
    parser.add_argument("--tiny", action="store_true", help="shrink every config to one tiny layer (plumbing only)")
    args = parser.parse_args(argv)
    if args.naive_dialogues < 1:
        parser.error("--naive-dialogues: must be at least 1 (bench.bench divides by the naive rate)")
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("bench_gpu: CUDA is not available (torch.cuda.is_available() is False); this benchmark "
                         "is meant for a GPU: pass --allow-cpu to run it on the CPU anyway")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer, tokenizer_source = tokenizer_for_bench(args.tokenizer)

    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {}
    report.update({
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "transformers": transformers.__version__, "trl": _version("trl"),
        "peft": _version("peft"), "cuda": torch.version.cuda, "tokenizer": tokenizer_source,
        "tokenizer_vocab": len(tokenizer), "weights": "random init from the config (cost only, not behaviour)",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "configs")},
        "notes": ["vocab: the config's full-width head; ids the tokenizer lacks get -1e4 (never sampled)",
                  f"turn length: end-of-turn forced to probability {args.eos_prob} per token at temperature 1",
                  f"naive loop: first {args.naive_dialogues} dialogues only (bench.bench runs it on all)",
                  "GRPO: LoRA r=16 on every linear layer, fp32 adapter; see models.*.grpo.precision"]})
    models = report.setdefault("models", {})
    for path in args.configs.split(","):
        models[Path(path).stem] = {**bench_model(path, tokenizer, args, device), "device": report["device"],
                                   "date": report["date"]}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")  # after each model: a later crash keeps it
    print(json.dumps({k: {m: v.get(m) for m in ("parameters", "engine_tokens_per_s", "ratio_vs_raw", "grpo")}
                      for k, v in models.items()}, indent=2))
    return report


if __name__ == "__main__":
    main()
