"""Supervised finetuning with LoRA (TRL ``SFTTrainer`` + PEFT): offline SML and the single-turn SFT baseline.

- Offline SML is filtered behaviour cloning: roll out dialogues with the current student, keep the
  successful ones, and train on every student turn of them (the teacher's turns are context only: the
  chat template marks student tokens with ``{% generation %}``, and ``assistant_only_loss`` trains on
  exactly those).
- ``st_sft`` trains on the same kind of task as one-turn problem -> reference answer chats, with the same
  number of examples and the same LoRA and optimiser settings.
"""

from __future__ import annotations

import copy
import random

import datasets
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from trl import SFTConfig, SFTTrainer

from sml import resume
from sml.tasks.build import load_tasks


def answer_of(task: dict) -> str:
    """The single-turn reply the base student is trained to give."""
    if task["domain"] == "code":
        return f"```python\n{task['solution'].strip()}\n```"
    return task["solution"]


def chat(task: dict) -> list[dict]:
    return [{"role": "user", "content": task["prompt"]}, {"role": "assistant", "content": answer_of(task)}]


def sft_config(out_dir: str, *, epochs: float, batch_size: int, lr: float, seed: int, logging_steps: int = 10,
               scheduler: str = "cosine", max_length: int = 2048, checkpoint_steps: int = 0) -> SFTConfig:
    """The SFTTrainer settings shared by pretraining and both finetuning conditions (CPU-friendly: no
    bf16, no gradient checkpointing; loss on the student's tokens only), with a checkpoint in ``out_dir``
    every ``checkpoint_steps`` steps (0: none)."""
    return SFTConfig(
        output_dir=out_dir, num_train_epochs=epochs, per_device_train_batch_size=batch_size, learning_rate=lr,
        lr_scheduler_type=scheduler, warmup_steps=0.05, weight_decay=0.01, logging_steps=logging_steps,
        report_to="none", seed=seed, data_seed=seed, bf16=False, gradient_checkpointing=False,
        assistant_only_loss=True, max_length=max_length, dataset_num_proc=None, disable_tqdm=False,
        **resume.checkpointing(checkpoint_steps))


def add_adapter(model, *, r: int = 16, alpha: int = 32, dropout: float = 0.0, seed: int = 0) -> PeftModel:
    """Wrap ``model`` in a fresh LoRA adapter on every linear layer. Seeding right before the adapter is
    created makes its initial weights (and so the whole run) a function of ``seed``."""
    if r < 1:
        raise ValueError(f"finetune.lora_r: must be a positive integer, got {r!r}")
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def inference_copy(model):
    """A plain model with the adapter merged in, for fast sampling (LoRA's extra matmuls cost more than
    the tiny base model's own); the trainable adapter is left untouched."""
    if not isinstance(model, PeftModel):
        return model
    merged = copy.deepcopy(model).merge_and_unload()
    for module in merged.modules():
        # TRL patches the live model's ``forward`` with a closure over the original module; a deep copy
        # keeps that closure, so the copy would silently run the unmerged live model instead of itself.
        module.__dict__.pop("forward", None)
    return merged


def training_tasks(task_dir, source: str, n_tasks: int, seed: int) -> datasets.Dataset:
    """The ``n_tasks`` training tasks of one run: the train split of ``source``, shuffled by ``seed``. Offline
    SML and ``st_sft`` of the same domain and seed draw exactly these."""
    if n_tasks < 1:
        raise ValueError(f"n_tasks: must be a positive integer, got {n_tasks!r}")
    tasks = load_tasks(task_dir, source, "train").shuffle(seed=seed)
    return tasks.select(range(min(n_tasks, len(tasks))))


def successful(transcripts: datasets.Dataset) -> datasets.Dataset:
    """The training chats of offline SML: the messages of every solved dialogue (teacher = user, student =
    assistant; the last student turn is the correct one)."""
    kept = transcripts.filter(lambda r: r["solved_turn"] > 0)
    return kept.select_columns(["messages"])


def single_turn(tasks, n: int, seed: int) -> datasets.Dataset:
    """``n`` one-turn problem -> reference answer chats drawn (with replacement once the tasks run out)
    from ``tasks``: the ``st_sft`` data."""
    tasks = list(tasks)
    if not tasks:
        raise ValueError("st_sft: no training tasks")
    rng = random.Random(seed)
    order = []
    while len(order) < n:
        order += rng.sample(range(len(tasks)), len(tasks))
    return datasets.Dataset.from_list([{"messages": chat(tasks[i])} for i in order[:n]])


def train(model, tokenizer, data: datasets.Dataset, out_dir: str, *, epochs: float, batch_size: int, lr: float,
          seed: int, callbacks=(), logging_steps: int = 1, checkpoint_steps: int = 0) -> list[dict]:
    """Train ``model`` (a PEFT model: only the adapter learns) on the chats in ``data``; return the log.
    With ``checkpoint_steps``, checkpoints go to ``out_dir`` and a rerun resumes from the newest."""
    if len(data) == 0:
        raise ValueError("sft.train: no training examples (did any dialogue succeed?)")
    config = sft_config(out_dir, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                        logging_steps=logging_steps, scheduler="constant_with_warmup", checkpoint_steps=checkpoint_steps)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                         callbacks=resume.with_replay(callbacks))
    resume.train(trainer, out_dir if checkpoint_steps else None)
    return trainer.state.log_history
