"""Pretraining over length-grouped batches (chats of similar lengths): an interrupted run resumes to exactly the
weights of an uninterrupted one."""

from pathlib import Path

import torch
from transformers import TrainerCallback

from sml import settings
from sml.train import base_model, pretrain
from sml.train import corpus as chat_corpus
from tiny_models import tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]


class StopAt(TrainerCallback):
    """Ends training after ``step`` steps, as a kill would (the checkpoint of step 2 is the newest then); counts
    the steps this run took."""

    def __init__(self, step=None):
        self.step, self.taken = step, 0

    def on_step_end(self, args, state, control, **kwargs):
        self.taken += 1
        control.should_training_stop = self.step is not None and state.global_step >= self.step


def train(out, corpus, tok, callbacks=()):
    model = base_model.build_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                                   seed=0)
    pretrain.pretrain(model, tok, corpus, str(out), batch_size=8, lr=3e-3, seed=0, checkpoint_steps=2, max_length=1024,
                      callbacks=callbacks)
    return model


def test_a_resumed_pretraining_ends_with_the_uninterrupted_weights(tmp_path):
    cfg = settings.load(REPO / "profiles" / "smoke.yaml")
    corpus = chat_corpus.build(24, seed=0, tasks=cfg.tasks, exclude=set(), mix=cfg.base_student)
    tok = tiny_tokenizer()
    straight = train(tmp_path / "straight", corpus, tok)  # 48 chats / 8 = 6 steps, checkpoints at 2, 4, 6
    train(tmp_path / "interrupted", corpus, tok, callbacks=[StopAt(3)])
    assert [p.name for p in (tmp_path / "interrupted").glob("checkpoint-*")] == ["checkpoint-2"]
    counter = StopAt()
    resumed = train(tmp_path / "interrupted", corpus, tok, callbacks=[counter])
    assert counter.taken == 4  # it went on from step 2
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
