"""The bridge from the dialogue engine to TRL's ``GRPOTrainer(rollout_func=...)`` (online SML).

A whole conversation is one GRPO sample: the prompt is the teacher's opening message, the completion is
everything after it (every student turn and every teacher reply, token ids exactly as the engine built
them turn by turn), and ``env_mask`` is 1 on the student's tokens and 0 on the teacher's, so only what
the student wrote is trained. The reward is the conversation's return, ``gamma ** (t - 1)`` when solved
at student turn ``t``.

trl 1.16 passes ``rollout_func`` the prompts already repeated once per generation and expects one
completion per prompt received (design.md section 8).
"""

from __future__ import annotations

from collections.abc import Callable

from .engine import Dialogue, run_dialogues
from .student import Student


def conversation_sample(d: Dialogue, eos_id: int) -> dict:
    """One finished dialogue as ``prompt_ids``, ``completion_ids`` and ``env_mask`` (1 = a student token,
    including the end-of-turn token that closes each student turn)."""
    if not d.turn_starts:
        raise ValueError(f"dialogue {d.task['id']}#{d.sample} has no student turn")
    offset = d.turn_starts[0]
    completion = d.ids[offset:] + [eos_id]  # the last student turn is closed like every other
    mask = [0] * len(completion)
    for start, ids in zip(d.turn_starts, d.student_ids):
        for i in range(start - offset, start - offset + len(ids) + 1):
            mask[i] = 1
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
            "solved_turn": [d.solved_turn for d in dialogues]}


def conversation_reward(completions, reward, **kwargs) -> list[float]:
    """The reward function for ``GRPOTrainer``: the return the rollout already computed."""
    return list(reward)


def make_rollout_func(tasks: list[dict], teacher, *, prompt_key: str = "prompt", max_turns: int = 4,
                      gamma: float = 0.7, **engine_kwargs) -> Callable:
    """A ``rollout_func(prompts, trainer)`` that runs one dialogue per prompt received with the trainer's
    current model (the adapter being trained) as the student. ``prompts`` are the dataset's prompts
    (``task[prompt_key]``), each mapped back to its task."""
    by_prompt = {t[prompt_key]: t for t in tasks}

    def rollout(prompts, trainer) -> dict:
        unknown = [p for p in prompts if _text(p) not in by_prompt]
        if unknown:
            raise KeyError(f"rollout_func: {len(unknown)} prompt(s) match no task, e.g. {_text(unknown[0])[:80]!r}")
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        student = Student(model, trainer.processing_class)
        dialogues = run_dialogues([by_prompt[_text(p)] for p in prompts], student, teacher, max_turns=max_turns,
                                  gamma=gamma, progress=False,
                                  seed=1_000_003 * trainer.args.seed + trainer.state.global_step, **engine_kwargs)
        model.train(was_training)
        return rollout_outputs(dialogues, student.eos_id, gamma)

    return rollout


def _text(prompt) -> str:
    """A dataset prompt as text: a string, or the content of a one-message chat."""
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]
