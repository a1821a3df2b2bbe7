"""Probe a pretraining recipe for the embedded base student on the dev split, cheaply, before a full world
attempt: notebook 02's corpus, tokenizer, model and trainer under a settings file, stopped after a time limit,
with greedy one-turn success on (up to) 100 dev tasks per domain every ``--every`` steps and, at the end, the loss on
the reference answers' digits against their other tokens (``pretrain.digit_loss``: near ln 10 = 2.3, the
base guesses every number it should copy or compute).

Run: OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/probe_pretraining.py SETTINGS TASK_DIR OUT_DIR
         [--minutes 14] [--every 150]
(SETTINGS: params.yaml or a profile over it; TASK_DIR: data/tasks as notebook 01 writes it under SETTINGS)
"""
import argparse
import json
import time

import torch
from transformers import TrainerCallback

from sml import settings
from sml.tasks.build import load_tasks
from sml.train import base_model, pretrain
from sml.train import corpus as chat_corpus

SOURCES = {"math": "toy_math", "code": "toy_code"}


class StopAfter(TrainerCallback):
    def __init__(self, seconds: float):
        self.deadline = time.time() + seconds

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = time.time() > self.deadline


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings_file")
    parser.add_argument("task_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--minutes", type=float, default=14.0)
    parser.add_argument("--every", type=int, default=150, help="steps between greedy one-turn probes")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = settings.load(args.settings_file)
    bs = cfg.base_student
    dev = {d: (t := load_tasks(args.task_dir, src, "dev")).select(range(min(100, len(t)))) for d, src in SOURCES.items()}
    exclude = {p for src in SOURCES.values() for split in ("train", "dev", "eval")
               for p in load_tasks(args.task_dir, src, split)["prompt"]}
    corpus = chat_corpus.build(bs.n_pretrain, bs.seed + 1, cfg.tasks, exclude, mix=bs, code_max_steps=bs.code_max_steps,
                                math_max_terms=bs.math_max_terms)
    tokenizer = base_model.train_tokenizer((m["content"] for ms in corpus["messages"] for m in ms), bs.vocab_size)
    model = base_model.build_model(tokenizer, hidden_size=bs.hidden_size, num_layers=bs.num_layers,
                                   num_heads=bs.num_heads, num_kv_heads=bs.num_kv_heads,
                                   intermediate_size=bs.intermediate_size, max_positions=bs.max_positions,
                                   seed=bs.seed)
    start = time.time()

    def probe(m):
        found = pretrain.greedy_success(m, tokenizer, dev, cfg.dialogue)
        print(json.dumps({**found, "minutes": round((time.time() - start) / 60, 1)}), flush=True)
        return found

    callback = pretrain.EvalCallback(probe, args.every)
    history = pretrain.pretrain(model, tokenizer, corpus, f"{args.out_dir}/trainer", epochs=bs.epochs,
                                batch_size=bs.batch_size, lr=bs.lr, seed=bs.seed,
                                callbacks=[callback, StopAfter(60 * args.minutes)], max_length=bs.max_positions)
    model.eval()
    result = {"steps": max(h["step"] for h in history), "minutes": round((time.time() - start) / 60, 1),
              "probes": callback.history,
              **{f"digit_loss_{d}": pretrain.digit_loss(model, tokenizer, tasks)
                 for d, tasks in dev.items()}}
    model.save_pretrained(f"{args.out_dir}/model")
    tokenizer.save_pretrained(f"{args.out_dir}/model")
    print(json.dumps({k: v for k, v in result.items() if k != "probes"}))
    return result


if __name__ == "__main__":
    main()
