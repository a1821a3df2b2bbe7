"""Pretraining the embedded base student from scratch on single-turn problem -> answer chats.

The corpus is fresh problems from the same generators as the task sets (another seed), with every
prompt of the task sets' train and eval splits removed, so the student has seen neither the tasks it
will be trained on in dialogue nor the held-out ones. Answers are what a student should write in one
turn: the worked steps and "The answer is N." (math), a fenced Python function (code). It never sees
a second turn, so it has never seen feedback.

The ``base_student`` stage builds it only when it is the pipeline's student (``student.model`` is
``EMBEDDED``); under any other student (a real profile) it writes placeholders instead (``write_skipped``).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import datasets
from transformers import TrainerCallback
from trl import SFTTrainer

from sml import resume
from sml.train.sft import chat, sft_config, uses_bf16
from sml.tasks import toy_code, toy_math


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


def corpus(n_per_domain: int, seed: int, tasks_params: dict, exclude: set[str],
           code_max_steps: int | None = None) -> datasets.Dataset:
    """``n_per_domain`` single-turn chats per domain (math, code), none with a prompt in ``exclude``.

    ``tasks_params`` is the ``tasks`` section of params.yaml (difficulty of both generators).
    ``code_max_steps`` lets the corpus include longer code pipelines than the task sets: the 1-2 step
    space holds only ~3,500 distinct programs and the task sets use most of them, so longer pipelines
    teach the same word -> line mapping without repeating any task."""
    p = dict(tasks_params)
    p["code_max_steps"] = max(code_max_steps or 0, p["code_max_steps"])
    families = [f.strip() for f in p["code_families"].split(",")] if isinstance(p["code_families"], str) else p["code_families"]
    draw = 2 * n_per_domain + len(exclude)
    math = toy_math.generate(draw, seed, p["math_generator"], p["math_min_terms"], p["math_max_terms"],
                             p["math_min_digits"], p["math_max_digits"])
    code = toy_code.generate(draw, seed, tuple(families), p["code_min_steps"], p["code_max_steps"], p["code_n_tests"])
    rows = []
    for domain, tasks in (("math", math), ("code", code)):
        fresh = [t for t in tasks if t["prompt"] not in exclude][:n_per_domain]
        if len(fresh) < n_per_domain:
            raise ValueError(f"base_student.n_pretrain: only {len(fresh)} fresh {domain} problems at this difficulty "
                             f"(after removing the task sets' prompts), {n_per_domain} asked for")
        rows += [{"messages": chat(t), "domain": domain} for t in fresh]
    return datasets.Dataset.from_list(rows).shuffle(seed=seed)


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
             checkpoint_steps: int = 0) -> list[dict]:
    """Train ``model`` on the chats in ``train`` (loss on the student's tokens only) with TRL's SFTTrainer;
    return the trainer's log history. With ``checkpoint_steps``, checkpoints go to ``out_dir`` and a rerun
    resumes from the newest."""
    config = sft_config(out_dir, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                        logging_steps=logging_steps, max_length=512, checkpoint_steps=checkpoint_steps,
                        bf16=uses_bf16(model))
    trainer = SFTTrainer(model=model, args=config, train_dataset=train.remove_columns(["domain"]),
                         processing_class=tokenizer, callbacks=resume.with_replay(callbacks))
    resume.train(trainer, out_dir if checkpoint_steps else None)
    return trainer.state.log_history
