"""Tiny models and students shared by the dialogue tests (built from configs, never downloaded)."""

import torch

from sml.train.base_model import build_model, train_tokenizer
from sml.dialogue.student import Student
from sml.tasks import toy_code, toy_math


def tiny_tokenizer():
    tasks = toy_math.generate(200, 0) + toy_code.generate(200, 0)
    texts = [t["prompt"] for t in tasks] + [t["solution"] for t in tasks] + [s for t in tasks for s in t["shards"]]
    return train_tokenizer(texts, vocab_size=400)


def tiny_model(tokenizer, seed=0):
    """A one-layer random model whose weights are scaled up so that it says varied things (at the
    default init a tied one-layer model only ever emits one token)."""
    model = build_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                        seed=seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 1.0)
    return model


class ReplayStudent(Student):
    """A student whose turns are written by hand: ``script(dialogue_prompt_text, turn) -> reply``.
    Everything else (ids, template, engine plumbing) is the real ``Student``."""

    def __init__(self, tokenizer, model, script):
        super().__init__(model, tokenizer, device="cpu")
        self.script, self.calls = script, []

    def generate(self, prompts, max_new_tokens=96, temperature=1.0, top_p=1.0, batch_size=64, streams=None):
        self.calls.append(len(prompts))
        texts = [self.script(self.tokenizer.decode(p, skip_special_tokens=False)) for p in prompts]
        return [(self.encode(t), True) for t in texts]
