"""The bridge from the dialogue engine to TRL's ``GRPOTrainer(rollout_func=...)`` (online SML).

A whole conversation is one GRPO sample: the prompt is the teacher's opening message, the completion is
everything after it (every student turn and every teacher reply, token ids exactly as the engine built
them turn by turn), and ``env_mask`` is 1 on the student's tokens and 0 on the teacher's, so only what
the student wrote is trained. The reward is the conversation's return, ``gamma ** (t - 1)`` when solved
at student turn ``t``.

trl 1.16 passes ``rollout_func`` the prompts already repeated once per generation and expects one
completion per prompt received (design.md section 8).

At scale (``generation="vllm"``, the optional extra ``vllm``), the student's turns are sampled by TRL's vLLM
integration (``trainer.vllm_generation``: colocated on the training GPUs, or a ``trl vllm-serve`` server),
which TRL keeps in sync with the adapter being trained; the dialogue engine, teacher and masks are the same.
"""

from __future__ import annotations

from collections.abc import Callable

import datasets
import torch
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import split_tensor_dict

from sml import optional, resume, settings
from sml.dialogue.engine import run_dialogues
from sml.dialogue.environment import Dialogue
from sml.train.sft import inference_copy, precision
from sml.dialogue.student import Student



def conversation_sample(d: Dialogue, eos_id: int) -> dict:
    """One finished dialogue as ``prompt_ids``, ``completion_ids`` and ``env_mask`` (1 = a student token,
    including the end-of-turn token that closes each student turn)."""
    if not d.turn_starts:
        raise ValueError(f"dialogue {d.task['id']}#{d.sample} has no student turn")
    offset = d.turn_starts[0]
    completion = d.ids[offset:] + [eos_id]  # the last student turn is closed like every other
    mask = [0] * len(completion)
    for start, end in turn_spans(d):
        mask[start:end] = [1] * (end - start)
    return {"prompt_ids": d.ids[:offset], "completion_ids": completion, "env_mask": mask}


def rollout_outputs(dialogues: list[Dialogue], eos_id: int, gamma: float) -> dict:
    """What ``rollout_func`` returns for these dialogues, in order: the three required keys, ``env_mask``,
    and per conversation the ``reward`` and ``solved_turn`` (passed on to reward functions)."""
    samples = [conversation_sample(d, eos_id) for d in dialogues]
    return {"prompt_ids": [s["prompt_ids"] for s in samples],
            "completion_ids": [s["completion_ids"] for s in samples],
            "logprobs": None,  # the trainer recomputes them (no vLLM)
            "env_mask": [s["env_mask"] for s in samples],
            "reward": [d.reward(gamma) for d in dialogues],
            "solved_turn": [d.solved_turn for d in dialogues],
            "turn_returns": [turn_returns(d, gamma) for d in dialogues],
            "turn_spans": [turn_spans(d) for d in dialogues]}


def turn_spans(d: Dialogue) -> list[tuple[int, int]]:
    """Where each student turn (with its end-of-turn token) lies in the completion: ``[start, end)``."""
    offset = d.turn_starts[0]
    return [(start - offset, start - offset + len(ids) + 1) for start, ids in zip(d.turn_starts, d.student_ids)]


def turn_returns(d: Dialogue, gamma: float) -> list[float]:
    """The return from each student turn on: ``gamma ** (s - t)`` for turn ``t`` of a dialogue solved at
    turn ``s``, 0 for every turn of an unsolved one. Turn 1's return is the conversation's."""
    return [gamma ** (d.solved_turn - t) if d.solved_turn else 0.0 for t in range(1, d.turns + 1)]


def turn_advantages(returns: list[list[float]], spans: list[list[tuple[int, int]]], group_size: int, width: int,
                    scale: bool = True) -> torch.Tensor:
    """Per-token advantages for turn-level credit: each student turn's tokens get its return minus the mean
    return at the same turn over the conversations of its group (same task) that reached that turn,
    divided by their standard deviation when ``scale``. A turn nobody else reached gets 0."""
    if len(returns) % group_size:
        raise ValueError(f"turn_advantages: {len(returns)} conversations do not split into groups of {group_size}")
    adv = torch.zeros(len(returns), width)
    for first in range(0, len(returns), group_size):
        group = range(first, first + group_size)
        for t in range(max(len(returns[i]) for i in group)):
            members = [i for i in group if len(returns[i]) > t]
            values = torch.tensor([returns[i][t] for i in members])
            centred = values - values.mean()
            if scale and len(members) > 1:
                centred = centred / (values.std() + 1e-4)
            for i, a in zip(members, centred.tolist()):
                start, end = spans[i][t]
                adv[i, start:end] = a
    return adv


def longest_first(batch: dict) -> dict:
    """A generation batch (TRL's dict of per-conversation tensors and lists) with its conversations ordered from
    the longest (prompt and completion tokens) to the shortest, every per-conversation value in unison."""
    lengths = batch["prompt_mask"].sum(1) + batch["completion_mask"].sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)

    def permute(value):
        if value is None or (isinstance(value, torch.Tensor) and value.ndim == 0):
            return value  # not per conversation (num_items_in_batch)
        if isinstance(value, torch.Tensor):
            return value[order.to(value.device)]
        return [value[i] for i in order.tolist()]

    return {key: permute(value) for key, value in batch.items()}


def without_padding(batch: dict) -> dict:
    """A micro-batch without the padding columns none of its conversations uses: the prompts' leading ones (TRL
    pads prompts on the left) and the completions' trailing ones (on the right), in every value aligned with
    them (ids, masks, per-token advantages and log-probs). Those columns are masked out of attention and loss,
    so dropping them changes nothing that is computed, only what is paid for."""
    used = batch["prompt_mask"].any(0).nonzero()
    first = int(used.min()) if len(used) else 0
    used = batch["completion_mask"].any(0).nonzero()
    end = int(used.max()) + 1 if len(used) else 1
    width = batch["completion_ids"].shape[1]
    out = {}
    for key, value in batch.items():
        if key in ("prompt_ids", "prompt_mask"):
            value = value[:, first:]
        elif isinstance(value, torch.Tensor) and value.ndim == 2 and value.shape[1] == width:
            value = value[:, :end]
        out[key] = value
    return out


class LengthGroupedMixin:
    """A step's conversations reach its micro-batches (``online_sml.micro_batch``) longest first instead of
    shuffled, and each micro-batch drops the padding none of its rows needs. A step's conversations range from
    one student turn to ``max_turns`` turns with the teacher's replies, so a shuffled micro-batch pads most of
    its rows to a long one. With TRL's token-level loss (DAPO, normalised over the whole step) the update is
    the same: the same tokens are summed, in another order. Only for one optimiser step per rollout (TRL's
    default ``steps_per_generation``), where the micro-batches' order within the step does not matter."""

    def _prepare_inputs(self, generation_batch):
        if not self.model.training or self.args.steps_per_generation != self.args.gradient_accumulation_steps:
            return super()._prepare_inputs(generation_batch)  # several updates per rollout: keep TRL's shuffle
        every = self.args.steps_per_generation * self.num_iterations
        if self._step % every == 0 or self._buffered_inputs is None:
            batch = longest_first(self._generate_and_score_completions(generation_batch))
            self._buffered_inputs = [without_padding(b) for b in
                                     split_tensor_dict(batch, self.args.steps_per_generation)]
        return self._buffered_inputs[self._step % self.args.steps_per_generation]


class LengthGroupedGRPOTrainer(LengthGroupedMixin, GRPOTrainer):
    """TRL's ``GRPOTrainer`` with length-grouped micro-batches (``LengthGroupedMixin``)."""


class TurnCreditGRPOTrainer(LengthGroupedMixin, GRPOTrainer):
    """GRPO with turn-level credit: TRL's loss accepts per-token advantages, so each student turn is
    credited with its own discounted return (``turn_advantages``) instead of the whole conversation's."""

    def _generate_and_score_completions(self, inputs):
        if self.accelerator.num_processes > 1:
            raise NotImplementedError("online_sml.credit=turn runs on one process (groups must not be split)")
        out = super()._generate_and_score_completions(inputs)  # fills inputs with the rollout's extra fields
        out["advantages"] = turn_advantages([x["turn_returns"] for x in inputs], [x["turn_spans"] for x in inputs],
                                            self.num_generations, out["completion_ids"].shape[1],
                                            scale=self.args.scale_rewards != "none").to(out["completion_ids"].device)
        return out


def conversation_reward(completions, reward, solved_turn=None, log_metric=None, **kwargs) -> list[float]:
    """The reward function for ``GRPOTrainer``: the return the rollout already computed. Also logs the
    batch's success rate and mean solving turn (TRL passes ``log_metric``) so they are tracked per step."""
    if log_metric is not None and solved_turn:
        solved = [t for t in solved_turn if t]
        log_metric("success", len(solved) / len(solved_turn))
        if solved:
            log_metric("solved_turn", sum(solved) / len(solved))
    return list(reward)


def make_rollout_func(tasks: list[dict], teacher, dialogue: settings.Dialogue, *, max_turns: int,
                      prompt_key: str = "prompt", merge: bool = True) -> Callable:
    """A ``rollout_func(prompts, trainer)`` that runs one dialogue per prompt received (up to ``max_turns``
    student turns, sampled as ``dialogue`` says) with the trainer's current model (the adapter being
    trained) as the student. ``prompts`` are the dataset's prompts (``task[prompt_key]``), each mapped back
    to its task. ``merge`` samples from a copy with the adapter merged in (the same function, faster:
    LoRA's extra matmuls cost more than a tiny model's own). The copy is kept between rollouts and brought
    up to date in place, so one more copy of the weights stays in memory throughout training."""
    by_prompt = {t[prompt_key]: t for t in tasks}
    kept = None  # (the trained model, its merged copy)

    def rollout(prompts, trainer) -> dict:
        nonlocal kept
        unknown = [p for p in prompts if _text(p) not in by_prompt]
        if unknown:
            raise KeyError(f"rollout_func: {len(unknown)} prompt(s) match no task, e.g. {_text(unknown[0])[:80]!r}")
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        if getattr(trainer, "use_vllm", False):
            student = VLLMStudent(trainer.vllm_generation, trainer.processing_class)
        elif merge:
            kept = model, inference_copy(model, into=kept[1] if kept and kept[0] is model else None)
            student = Student(kept[1], trainer.processing_class)
        else:
            student = Student(model, trainer.processing_class)
        dialogues = run_dialogues([by_prompt[_text(p)] for p in prompts], student, teacher, dialogue,
                                  max_turns=max_turns, seed=1_000_003 * trainer.args.seed + trainer.state.global_step,
                                  progress=False)
        model.train(was_training)
        return rollout_outputs(dialogues, student.eos_id, dialogue.gamma)

    return rollout


class VLLMStudent(Student):
    """The student's turns sampled by TRL's ``VLLMGeneration`` (weights synced by the trainer before each
    rollout). Its sampling settings come from the ``GRPOConfig`` (``grpo_config`` sets them from the
    dialogue parameters), so the engine's per-call ones are not passed on."""

    def __init__(self, generation, tokenizer):
        self.model, self.device, self.generation = None, "vllm", generation
        self.use_tokenizer(tokenizer)
        self.max_length = getattr(generation, "max_model_length", None) or 32768

    def generate(self, prompts, max_new_tokens=96, temperature=1.0, top_p=1.0, batch_size=64, streams=None):
        _, completions, _, _ = self.generation.generate(prompts=[list(p) for p in prompts], images=None,
                                                        num_generations=1)
        ended = [bool(ids) and ids[-1] == self.eos_id for ids in completions]
        return [(list(ids[:-1]) if end else list(ids), end) for ids, end in zip(completions, ended)]


def _text(prompt) -> str:
    """A dataset prompt as text: a string, or the content of a one-message chat."""
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def grpo_config(out_dir: str, online: settings.OnlineSML, *, seed: int, checkpoint_steps: int = 0,
                bf16: bool = False, vllm: dict | None = None) -> GRPOConfig:
    """CPU-friendly GRPO settings: one optimiser step per batch of ``online.tasks_per_step`` tasks x
    ``online.group_size`` conversations at a constant learning rate (no warm-up: with a dozen steps, a
    warm-up step would run at lr 0), logged every step; TRL's defaults otherwise (DAPO token-level loss,
    group-scaled advantages, clip 0.2). ``online.micro_batch`` conversations go through each forward/backward
    pass (0: the whole step at once), with gradient accumulation up to the step; the step's conversations
    are still rolled out in one call. ``vllm`` (``vllm_settings``) switches rollouts to TRL's vLLM integration."""
    per_step = online.tasks_per_step * online.group_size
    batch = online.micro_batch or per_step
    return GRPOConfig(output_dir=out_dir, max_steps=online.steps, per_device_train_batch_size=batch,
                      gradient_accumulation_steps=per_step // batch, num_generations=online.group_size,
                      learning_rate=online.lr, beta=online.beta, lr_scheduler_type="constant", logging_steps=1,
                      report_to="none", seed=seed, data_seed=seed, **precision(bf16), gradient_checkpointing=False,
                      disable_tqdm=False, **resume.checkpointing(checkpoint_steps), **(vllm or {}))


def vllm_settings(generation: settings.Generation, dialogue: settings.Dialogue) -> dict:
    """``GRPOConfig`` fields for vLLM rollouts. Importance-sampling correction is off: a completion holds the
    teacher's tokens too, which vLLM did not sample, so there are no sampling log-probs to correct with."""
    return {"use_vllm": True, "vllm_mode": generation.vllm_mode,
            "vllm_server_base_url": generation.vllm_server_url or None,
            "vllm_gpu_memory_utilization": generation.vllm_gpu_memory, "vllm_importance_sampling_correction": False,
            "max_completion_length": dialogue.max_new_tokens, "temperature": dialogue.temperature,
            "top_p": dialogue.top_p}


def train(model, tokenizer, tasks, teacher, out_dir: str, online: settings.OnlineSML, dialogue: settings.Dialogue,
          generation: settings.Generation, *, seed: int, max_turns: int, callbacks=(), checkpoint_steps: int = 0,
          bf16: bool = False) -> list[dict]:
    """Online SML: GRPO (``online``'s budget, learning rate, credit and KL) on the LoRA adapter of ``model``
    (a PEFT model) with the dialogue engine as the rollout, ``online.group_size`` conversations of up to
    ``max_turns`` student turns per task. ``max_turns=1`` is single-turn GRPO (``st_rl``). Returns the
    trainer's log. With ``checkpoint_steps``, checkpoints go to ``out_dir`` and a rerun resumes from the
    newest (rollouts are seeded by step, so it continues exactly as an uninterrupted run would).
    ``generation.grpo`` ``vllm`` samples the student's turns with vLLM (``generation.vllm_mode`` colocate or
    server; see the module docstring)."""
    use_vllm = generation.grpo == "vllm"
    if use_vllm:
        optional.require("vllm", "vllm", "generation.grpo 'vllm'")
    tasks = list(tasks)
    if not tasks:
        raise ValueError("grpo.train: no training tasks")
    config = grpo_config(out_dir, online, seed=seed, checkpoint_steps=checkpoint_steps, bf16=bf16,
                         vllm=vllm_settings(generation, dialogue) if use_vllm else None)
    rollout = make_rollout_func(tasks, teacher, dialogue, max_turns=max_turns)
    trainer_class = TurnCreditGRPOTrainer if online.credit == "turn" else LengthGroupedGRPOTrainer
    trainer = trainer_class(model=model, reward_funcs=conversation_reward, args=config, processing_class=tokenizer,
                            train_dataset=datasets.Dataset.from_dict({"prompt": [t["prompt"] for t in tasks]}),
                            rollout_func=rollout, callbacks=resume.with_replay(callbacks))
    if use_vllm and generation.vllm_mode == "server" and trainer.accelerator.num_processes > 1:
        # the server gathers every process's prompts once per call; dialogues end at different turns, so
        # processes would make different numbers of calls and wait on each other forever
        raise NotImplementedError("generation.vllm_mode 'server' runs with one training process; use 'colocate'")
    resume.train(trainer, out_dir if checkpoint_steps else None)
    return trainer.state.log_history
