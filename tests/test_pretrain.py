"""Pretraining over length-grouped batches (chats of similar lengths): an interrupted run resumes to exactly the
weights of an uninterrupted one."""

from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from sml import settings
from sml.train import base_model, pretrain
from sml.train import corpus as chat_corpus
from sml.tasks.toy_math import generate as toy_math_generate
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


def test_the_pretraining_probe_script_reports_probes_and_digit_losses(tmp_path):
    import importlib.util
    from sml.tasks.build import build
    cfg = settings.load(REPO / "profiles" / "smoke.yaml")
    build(cfg.tasks.model_copy(update={"sources": "toy_math,toy_code"}), tmp_path / "tasks")
    spec = importlib.util.spec_from_file_location("probe_pretraining", REPO / "scripts" / "probe_pretraining.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    result = script.main([str(REPO / "profiles" / "smoke.yaml"), str(tmp_path / "tasks"), str(tmp_path / "out"),
                          "--minutes", "0", "--every", "0"])
    assert result["steps"] == 1  # the time limit stops it after its first step
    assert set(result["probes"][-1]) == {"step", "greedy_sr1_math", "greedy_sr1_code"}
    for domain in ("math", "code"):
        assert result[f"digit_loss_{domain}"]["digits"] > 0 and result[f"digit_loss_{domain}"]["other"] > 0
    assert (tmp_path / "out" / "model" / "tokenizer.json").exists()


def test_a_world_attempt_runs_tasks_and_base_student_into_its_own_folder(tmp_path, capsys):
    """scripts/world_attempt.py: notebooks 01 and 02 under a settings file, into OUT/<its stem>, ending on the
    calibration's verdicts; every attempt's settings file in profiles/world/ is valid over params.yaml."""
    import importlib.util
    for attempt in sorted((REPO / "profiles" / "world").glob("*.yaml")):
        settings.load(attempt)
    spec = importlib.util.spec_from_file_location("world_attempt", REPO / "scripts" / "world_attempt.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    metrics = script.main([str(REPO / "profiles" / "smoke.yaml"), "--out", str(tmp_path)])
    assert (tmp_path / "smoke" / "02_base_student.ipynb").exists()
    assert {"sr1_ok_math", "well_formed_ok_code", "feedback_below_retry_math"} <= set(metrics)
    assert "sr1_ok_math: " in capsys.readouterr().out


class Stub:
    """A causal LM stand-in with fixed next-token logits: sure of the token that actually comes next where
    ``sure(token)`` holds, uniform over the vocabulary elsewhere."""

    device = "cpu"

    def __init__(self, vocab: int, sure):
        self.vocab, self.sure = vocab, sure

    def __call__(self, input_ids):
        import torch
        from types import SimpleNamespace
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for position, token in enumerate(input_ids[0, 1:].tolist()):
            if self.sure(token):
                logits[0, position, token] = 50.0
        return SimpleNamespace(logits=logits)


def test_digit_loss_splits_the_answer_tokens_into_digits_and_the_rest():
    import math
    tok = tiny_tokenizer()
    tasks = toy_math_generate(3, 0, min_digits=2, max_digits=2)
    uniform = pretrain.digit_loss(Stub(len(tok), lambda token: False), tok, tasks)
    assert uniform["digits"] == pytest.approx(math.log(len(tok))) and uniform["other"] == pytest.approx(math.log(len(tok)))
    # sure of the digits only: a student that copies every number but has not learned the answer's frame
    digits_known = pretrain.digit_loss(Stub(len(tok), lambda token: tok.decode([token]).strip().isdigit()), tok, tasks)
    assert digits_known["digits"] < 1e-6 and digits_known["other"] == pytest.approx(math.log(len(tok)))
    tasks_without_digits = [{**t, "solution": "The answer is unknown."} for t in tasks]
    assert math.isnan(pretrain.digit_loss(Stub(len(tok), lambda token: False), tok, tasks_without_digits)["digits"])


def test_pretraining_in_phases_counts_steps_on_and_skips_a_phase_of_no_epochs(tmp_path):
    cfg = settings.load(REPO / "profiles" / "smoke.yaml")
    tok = tiny_tokenizer()
    singles = chat_corpus.single_turn(chat_corpus.fresh_problems(8, 0, cfg.tasks, set()), seed=0)  # 16: 2 steps of 8
    mix = chat_corpus.build(12, seed=0, tasks=cfg.tasks, exclude=set(), mix=cfg.base_student)  # 24 chats: 3 steps
    model = base_model.build_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                   intermediate_size=64, seed=0)
    seen = []
    history, probes = pretrain.pretrain_in_phases(
        model, tok, [("single_turn", singles, 1), ("nothing", mix, 0), ("chat_mix", mix, 1)], str(tmp_path),
        evaluate=lambda m: seen.append(1) or {"score": len(seen)}, eval_every=0, batch_size=8, lr=1e-3, seed=0,
        checkpoint_steps=0, max_length=1024)
    assert [p["step"] for p in probes] == [2, 5] and [p["score"] for p in probes] == [1, 2]  # each phase's end
    assert {h["phase"] for h in history} == {"single_turn", "chat_mix"}
    assert max(h["step"] for h in history if h["phase"] == "chat_mix") == 5
