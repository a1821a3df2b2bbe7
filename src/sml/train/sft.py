"""Supervised finetuning with LoRA (TRL ``SFTTrainer`` + PEFT): offline SML and the single-turn SFT baseline.

- Offline SML is filtered behaviour cloning: roll out dialogues with the current student, keep the
  successful ones, and train on every student turn of them (the teacher's turns are context only: the
  chat template marks student tokens with ``{% generation %}``, and ``assistant_only_loss`` trains on
  exactly those).
- ``st_sft`` trains on the same kind of task as one-turn problem -> reference answer chats, with the same
  number of examples and the same LoRA and optimiser settings.

Training runs in bf16 mixed precision when the student's weights are bfloat16 (``student.dtype``), in fp32
otherwise (``uses_bf16``). The dialogues to learn from are sampled in-process or by an OpenAI-compatible
server, as evaluation's are (``generation.eval``; ``rollout_student``).
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import datasets
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from trl import SFTConfig, SFTTrainer

from sml import resume, settings
from sml.dialogue.remote_student import adapter_name, load_student
from sml.dialogue.student import Student
from sml.tasks.build import load_tasks


def answer_of(task: dict) -> str:
    """The single-turn reply the base student is trained to give."""
    if task["domain"] == "code":
        return f"```python\n{task['solution'].strip()}\n```"
    return task["solution"]


def chat(task: dict) -> list[dict]:
    return [{"role": "user", "content": task["prompt"]}, {"role": "assistant", "content": answer_of(task)}]


def uses_bf16(model_or_dtype) -> bool:
    """Whether training runs in bf16 mixed precision: exactly when the student's weights are bfloat16 (a model,
    whose frozen weights decide, a torch dtype or a ``student.dtype`` name), as the notebooks set it for GRPO
    (``bf16=dtype == "bfloat16"``); fp32 otherwise. From a model, ``auto`` counts as what the checkpoint holds."""
    if isinstance(model_or_dtype, (str, torch.dtype)):
        return str(model_or_dtype).removeprefix("torch.") == "bfloat16"
    params = list(model_or_dtype.parameters())
    frozen = {p.dtype for p in params if not p.requires_grad} or {p.dtype for p in params}
    return torch.bfloat16 in frozen


def precision(bf16: bool) -> dict:
    """Trainer arguments for bf16 mixed precision (or none: fp32). Without a GPU, bf16 runs under the CPU's
    autocast (``use_cpu``; transformers refuses bf16 on a CPU-only machine otherwise); a GPU without bf16 is
    a clear error."""
    if not bf16:
        return {"bf16": bf16}
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    if is_torch_bf16_gpu_available() or is_torch_xla_available():
        return {"bf16": True}
    if torch.cuda.is_available():
        raise ValueError("student.dtype 'bfloat16': this GPU has no bf16 support; use float32 (or float16 weights)")
    return {"bf16": True, "use_cpu": True}


def sft_config(out_dir: str, *, epochs: float, batch_size: int, lr: float, seed: int, logging_steps: int = 10,
               scheduler: str = "cosine", max_length: int = 2048, checkpoint_steps: int = 0,
               bf16: bool = False) -> SFTConfig:
    """The SFTTrainer settings shared by pretraining and both finetuning conditions (no gradient
    checkpointing; loss on the student's tokens only; bf16 mixed precision with ``bf16``, see ``uses_bf16``),
    with a checkpoint in ``out_dir`` every ``checkpoint_steps`` steps (0: none)."""
    return SFTConfig(
        output_dir=out_dir, num_train_epochs=epochs, per_device_train_batch_size=batch_size, learning_rate=lr,
        lr_scheduler_type=scheduler, warmup_steps=0.05, weight_decay=0.01, logging_steps=logging_steps,
        report_to="none", seed=seed, data_seed=seed, gradient_checkpointing=False,
        assistant_only_loss=True, max_length=max_length, dataset_num_proc=None, disable_tqdm=False,
        **precision(bf16), **resume.checkpointing(checkpoint_steps))


def add_adapter(model, finetune: settings.Finetune, seed: int) -> PeftModel:
    """Wrap ``model`` in a fresh LoRA adapter on every linear layer (``finetune.lora_*``). Seeding right
    before the adapter is created makes its initial weights (and so the whole run) a function of ``seed``."""
    torch.manual_seed(seed)
    config = LoraConfig(r=finetune.lora_r, lora_alpha=finetune.lora_alpha, lora_dropout=finetune.lora_dropout,
                        target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def inference_copy(model, into=None):
    """A plain model with the adapter merged in, for fast sampling (LoRA's extra matmuls cost more than
    the tiny base model's own); the trainable adapter is left untouched. ``into``: a copy this function made
    of ``model`` before, brought up to date in place and returned (``merge_into``) instead of copying the
    whole model again; a new copy where that cannot be vouched for."""
    if not isinstance(model, PeftModel):
        return model
    if into is not None and merge_into(into, model):
        return into
    merged = copy.deepcopy(model).merge_and_unload()
    for module in merged.modules():
        # TRL patches the live model's ``forward`` with a closure over the original module; a deep copy
        # keeps that closure, so the copy would silently run the unmerged live model instead of itself.
        module.__dict__.pop("forward", None)
    return merged


def merge_into(merged, model: PeftModel) -> bool:
    """Set each adapted layer's weight in ``merged`` (an ``inference_copy`` of ``model``) to its base weight plus
    the adapter's delta as it is now: PEFT's own ``get_delta_weight``, added as its merge adds it, so the weights
    are those a fresh ``merge_and_unload`` gives, bit for bit. Only for plain LoRA on linear layers whose
    trainable weights are all LoRA's (nothing else can have moved since the copy); False, leaving ``merged``
    as it was, for anything else."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora.layer import LoraLayer

    if not all(".lora_A." in name or ".lora_B." in name for name, p in model.named_parameters() if p.requires_grad):
        return False
    targets, updates = dict(merged.named_modules()), []
    for name, layer in model.named_modules():
        if not isinstance(layer, LoraLayer):
            continue
        adapters = layer.active_adapters
        target = targets.get(name.removeprefix("base_model.model."))
        base = layer.get_base_layer()
        if (type(layer) is not LoraLinear or layer.merged or len(adapters) != 1 or adapters[0] in layer.lora_variant
                or layer.lora_bias[adapters[0]] or type(target) is not torch.nn.Linear
                or target.weight.shape != base.weight.shape or target.weight.dtype != base.weight.dtype):
            return False
        updates.append((target.weight, base.weight, layer, adapters[0]))
    with torch.no_grad():
        for weight, base_weight, layer, adapter in updates:
            weight.copy_(base_weight)
            weight += layer.get_delta_weight(adapter)
    return True


def trained(model) -> bool:
    """Whether ``model``'s LoRA adapter has learned anything: a fresh one (every ``lora_B`` zero) leaves the
    base model's outputs unchanged."""
    return any(bool(p.detach().abs().max() > 0) for name, p in model.named_parameters() if "lora_B" in name)


def rollout_student(model, tokenizer, model_path: str, generation: settings.Generation, adapter_dir=None):
    """The student that collects training dialogues (offline SML, Q-priming) with ``model`` as it is now,
    sampled where evaluation samples (``generation.eval``):

    - ``local``: in-process, a copy of ``model`` with its adapter merged (``inference_copy``);
    - ``openai``: the OpenAI-compatible server at ``generation.eval_base_url``, which serves the student ``model_path``.
      While the adapter is fresh (``trained``: it changes nothing), the server's base model samples. Once
      trained (offline SML from round 2 on), the adapter is saved to ``adapter_dir`` and registered with
      the server under a name made from that path (vLLM: ``--enable-lora``, a ``--max-lora-rank`` of at
      least ``finetune.lora_r``, ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, and ``adapter_dir`` on a
      file system the server can read)."""
    if generation.eval == "local":
        return Student(inference_copy(model), tokenizer)
    adapter = None
    if isinstance(model, PeftModel) and trained(model):
        if adapter_dir is None:
            raise ValueError("rollout_student: the adapter has been trained, so the server must serve it: pass an "
                             "adapter_dir to save it to")
        adapter = Path(adapter_dir).resolve()
        model.save_pretrained(adapter)
    try:
        return load_student(model_path, adapter and str(adapter), generation)
    except (RuntimeError, OSError) as e:
        if adapter is None:
            raise
        raise RuntimeError(
            f"generation.eval 'openai' with offline_sml.rounds > 1: from round 2 on, dialogues are sampled from the "
            f"adapter trained so far, so the server at {generation.eval_base_url} must load it, as {adapter_name(adapter)!r} from "
            f"{adapter}, and it could not ({e}). Serve the student with --enable-lora, --max-lora-rank >= "
            "finetune.lora_r and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True on a machine that can read that folder, or "
            "set offline_sml.rounds 1 or generation.eval local") from e


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


def train(model, tokenizer, data: datasets.Dataset, out_dir: str, finetune: settings.Finetune, *, seed: int,
          callbacks=(), logging_steps: int = 1, checkpoint_steps: int = 0, bf16: bool | None = None) -> list[dict]:
    """Train ``model`` (a PEFT model: only the adapter learns) on the chats in ``data`` with ``finetune``'s
    epochs, batch size and learning rate; return the log. With ``checkpoint_steps``, checkpoints go to
    ``out_dir`` and a rerun resumes from the newest. ``bf16`` (None: ``uses_bf16(model)``, so bf16 exactly
    when the student was loaded as bfloat16) picks the precision."""
    if len(data) == 0:
        raise ValueError("sft.train: no training examples (did any dialogue succeed?)")
    config = sft_config(out_dir, epochs=finetune.epochs, batch_size=finetune.batch_size, lr=finetune.lr, seed=seed,
                        logging_steps=logging_steps, scheduler="constant_with_warmup",
                        checkpoint_steps=checkpoint_steps, bf16=uses_bf16(model) if bf16 is None else bf16)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                         callbacks=resume.with_replay(callbacks))
    resume.train(trainer, out_dir if checkpoint_steps else None)
    return trainer.state.log_history
