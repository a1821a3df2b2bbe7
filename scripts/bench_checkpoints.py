"""What trainer checkpoints cost: 40 pretraining steps of the embedded student, without checkpoints and with
one every 4 steps (resume.checkpoint_steps), alternated in one process; prints the time ratio.

Run: PYTHONPATH=src python scripts/bench_checkpoints.py  (needs models/base_student for its tokenizer)
"""
import tempfile
import time

import datasets
import torch

from sml.train import base_model, pretrain
from sml.train.sft import chat
from sml.dialogue.student import load_tokenizer
from sml.tasks import toy_math

tok = load_tokenizer("models/base_student")
rows = [{"messages": chat(t), "domain": "math"} for t in toy_math.generate(64 * 40, 5)]
data = datasets.Dataset.from_list(rows)


def run(ck):
    model = base_model.build_model(tok, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=384, seed=0)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        pretrain.pretrain(model, tok, data, d, epochs=1, batch_size=64, lr=3e-3, seed=0, checkpoint_steps=ck)
        return time.perf_counter() - t


torch.set_num_threads(2)
a = run(0); b = run(4); a2 = run(0); b2 = run(4)
print(f"40 steps: no checkpoints {a:.1f}/{a2:.1f} s, checkpoint every 4 steps {b:.1f}/{b2:.1f} s, ratio {(b+b2)/(a+a2):.3f}")
