"""Pretraining the embedded base student from scratch: a miniature instruct model that has never seen feedback.

The corpus (``sml.train.corpus``) is fresh problems from the same generators as the task sets (another seed),
with every prompt of the task sets' train, dev and eval splits removed, so the student has seen none of the
tasks it will be trained, tuned or evaluated on. It mixes single-turn chats, chats of several independent
problems (as long as an evaluation dialogue) and a few clarifying exchanges; answers are what a student should
write: the worked steps and "The answer is N." (math), a fenced Python function (code). No answer in it is
ever judged, corrected or retried.

The ``base_student`` stage builds it only when it is the pipeline's student (``student.model`` is
``EMBEDDED``); under any other student (a real profile) it writes placeholders instead (``write_skipped``).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import datasets
import torch
from transformers import TrainerCallback
from trl import SFTTrainer

from sml import resume
from sml.dialogue.engine import run_dialogues
from sml.dialogue.student import Student
from sml.dialogue.teacher import ScriptedTeacher
from sml.train.sft import chat, sft_config, uses_bf16


EMBEDDED = "models/base_student"  # student.model of the embedded default, as the base_student stage writes it


def builds_embedded(student_model: str) -> bool:
    """Whether the base_student stage builds the embedded student: only when ``student.model`` names it
    (``models/base_student``, however spelled: ``./models/base_student/``). Any other student is loaded
    by every stage as it is, and the tiny model would be built for nothing."""
    return PurePosixPath(str(student_model).replace("\\", "/")) == PurePosixPath(EMBEDDED)


def write_skipped(out_root, student_model: str) -> dict:
    """The base_student stage's outputs when it builds nothing: ``models/base_student`` holding only a note
    (DVC needs the folder; no stage reads it then) and ``metrics/base_student.json`` saying it was skipped
    and why. Returns the metrics."""
    out_root = Path(out_root)
    reason = (f"student.model is {student_model!r}, not the embedded {EMBEDDED!r}: no stage uses the embedded "
              "student, so it was not built")
    model_dir = out_root / EMBEDDED
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "SKIPPED.md").write_text(f"Not built: {reason}.\n")
    metrics = {"skipped": True, "student": student_model, "reason": reason}
    (out_root / "metrics").mkdir(parents=True, exist_ok=True)
    (out_root / "metrics" / "base_student.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


class EvalCallback(TrainerCallback):
    """Calls ``evaluate(model)`` every ``every`` steps and at the end. The scores go into the trainer's log
    history (marked ``"probe": True``), so they are saved with each checkpoint and survive a resume;
    ``history`` lists them once training ends."""

    def __init__(self, evaluate, every: int):
        self.evaluate, self.every, self.history = evaluate, every, []

    def _run(self, state, model):
        scores = self.evaluate(model)
        model.train()
        state.log_history.append({"step": state.global_step, "probe": True, **scores})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0:
            self._run(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        probes = [h for h in state.log_history if h.get("probe")]
        if not probes or probes[-1]["step"] != state.global_step:
            self._run(state, model)
        self.history = [{k: v for k, v in h.items() if k != "probe"} for h in state.log_history if h.get("probe")]


def pretrain(model, tokenizer, train: datasets.Dataset, out_dir: str, *, epochs: float = 1.0, batch_size: int = 64,
             lr: float = 2e-3, seed: int = 0, callbacks=(), logging_steps: int = 10,
             checkpoint_steps: int = 0, max_length: int = 512) -> list[dict]:
    """Train ``model`` on the chats in ``train`` (loss on the student's tokens only) with TRL's SFTTrainer;
    return the trainer's log history. Chats longer than ``max_length`` tokens are cut. With ``checkpoint_steps``,
    checkpoints go to ``out_dir`` and a rerun resumes from the newest."""
    config = sft_config(out_dir, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                        logging_steps=logging_steps, max_length=max_length, checkpoint_steps=checkpoint_steps,
                        bf16=uses_bf16(model))
    # Chats run from one answer to an evaluation's length: batches of similar lengths waste less on padding
    # (measured: 2.2x more tokens per second on this corpus than random batches).
    config.train_sampling_strategy = "group_by_length"
    trainer = SFTTrainer(model=model, args=config, train_dataset=train.select_columns(["messages"]),
                         processing_class=tokenizer, callbacks=resume.with_replay(callbacks))
    resume.train(trainer, out_dir if checkpoint_steps else None)
    return trainer.state.log_history


def greedy_success(model, tokenizer, tasks_by_domain: dict, dialogue) -> dict:
    """The pretraining probe: per domain, the share of ``tasks_by_domain[domain]`` that ``model`` solves in one
    greedy turn (``greedy_sr1_<domain>``), under the scripted teacher and ``dialogue``'s other settings."""
    student, greedy = Student(model, tokenizer), dialogue.model_copy(update={"temperature": 0.0})
    return {f"greedy_sr1_{domain}": sum(bool(d.solved_turn) for d in run_dialogues(
                tasks, student, ScriptedTeacher(), greedy, max_turns=1, progress=False)) / len(tasks)
            for domain, tasks in tasks_by_domain.items()}


def pretrain_in_phases(model, tokenizer, phases, out_dir: str, *, evaluate, eval_every: int, batch_size: int,
                       lr: float, seed: int, checkpoint_steps: int, max_length: int) -> tuple[list[dict], list[dict]]:
    """``pretrain`` on each ``(name, chats, epochs)`` of ``phases`` in turn (0 epochs: skipped), each with its own
    schedule and checkpoints in ``out_dir/name``. Returns the log history (each entry marked with its ``phase``)
    and the probes (``evaluate(model)`` every ``eval_every`` steps and at each phase's end), their steps counted
    on across phases."""
    history, probes, done = [], [], 0
    for name, chats, epochs in phases:
        if not epochs:
            continue
        callback = EvalCallback(evaluate, eval_every)
        log = pretrain(model, tokenizer, chats, str(Path(out_dir) / name), epochs=epochs, batch_size=batch_size,
                       lr=lr, seed=seed, callbacks=[callback], checkpoint_steps=checkpoint_steps, max_length=max_length)
        history += [{**h, "step": h["step"] + done, "phase": name} for h in log if "step" in h]
        probes += [{**h, "step": h["step"] + done} for h in callback.history]
        done = max(h["step"] for h in history)
    return history, probes


@torch.no_grad()
def digit_loss(model, tokenizer, tasks) -> dict:
    """The student's mean loss (nats per token) on the reference answers of ``tasks``, split into digit tokens
    (``digits``) and all others (``other``). A base that cannot copy numbers from the request writes the answer's
    frame (loss near 0) but guesses its digits (loss near ln 10 = 2.3): the one skill a low SR@1 can hide."""
    losses = {"digits": [], "other": []}
    for task in tasks:
        encoded = tokenizer.apply_chat_template(chat(task), tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True)
        ids = torch.tensor([encoded["input_ids"]], device=model.device)
        logprobs = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
        nll = -logprobs.gather(1, ids[0, 1:, None])[:, 0]
        for position, (token, loss) in enumerate(zip(ids[0, 1:].tolist(), nll.tolist()), start=1):
            if encoded["assistant_masks"][position]:
                losses["digits" if tokenizer.decode([token]).strip().isdigit() else "other"].append(loss)
    return {name: sum(values) / len(values) if values else float("nan") for name, values in losses.items()}
