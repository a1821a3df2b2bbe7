"""The dialogue engine: many teacher-student dialogues advanced together.

The student writes turns in a continuously refilled batch (``sml.dialogue.decoding``); the turns that
ended are gathered, the environment (``sml.dialogue.environment``) judges them, the teacher replies to all
of them at once, and those dialogues rejoin the batch for their next turn while the others still write.
A dialogue ends when the student answers correctly or after ``max_turns`` student turns. Students that
sample elsewhere (a server, vLLM) advance every dialogue in rounds instead: one ``generate`` per turn.
Each dialogue samples from its own random stream (``dialogue_seed``), so what it draws does not depend on
which other dialogues share its batch. The same engine collects SFT data, produces GRPO rollouts (it keeps
the student's generated token ids) and runs evaluation.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import torch
from tqdm.auto import tqdm

from sml import settings
from sml.dialogue.environment import Dialogue, Environment, Judge, StudentTurn
from sml.dialogue.student import Student
from sml.dialogue.teacher import Teacher


def dialogue_seed(seed: int, task_id: str, occurrence: int) -> int:
    """The seed of one dialogue's own random stream: a hash of the run's seed, its task and which of that
    task's dialogues it is (a task listed twice, as GRPO's groups are, counts on), so that a dialogue draws
    the same random numbers whatever else runs in its batch."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{task_id}:{occurrence}".encode()).digest()[:8], "little") >> 1


def start(tasks, student: Student, teacher: Teacher, env: Environment, samples_per_task: int,
          seed: int) -> list[Dialogue]:
    """Open one dialogue per task and sample, each with its own random stream: the teacher states the
    problem (or its intent)."""
    dialogues, seen = [], Counter()
    for task in tasks:
        messages = [{"role": "user", "content": teacher.open(task, env.variant)}]
        ids = student.prompt_ids(messages)
        for k in range(samples_per_task):
            d = env.open(task, k, messages, ids)
            d.stream = torch.Generator().manual_seed(dialogue_seed(seed, task["id"], seen[task["id"]]))
            seen[task["id"]] += 1
            dialogues.append(d)
    return dialogues


def inject_questions(inject, dialogues: list[Dialogue], turns: list[StudentTurn], rngs: list[random.Random],
                     student: Student, sampling: dict) -> None:
    """Q-priming: replace some failed turns by questions (in place). Each dialogue draws from its own entry of
    ``rngs``, so which turns are replaced does not depend on which turns ended together."""
    chosen = [k for k, (d, t, rng) in enumerate(zip(dialogues, turns, rngs))
              if inject.choose(d.turns + 1, [d], [t.correct], rng)]
    asked = inject.questions([dialogues[k] for k in chosen], [turns[k].text for k in chosen],
                             [turns[k].check for k in chosen], student, sampling)
    for k, (question, how) in zip(chosen, asked):
        # the decoder's cache of this dialogue covers the replaced words only up to where they differ
        turns[k] = StudentTurn(question, student.encode(question), label="question", injected=how)


def answer(ended: list[tuple], dialogues: list[Dialogue], student: Student, teacher: Teacher, env: Environment,
           inject, inject_rngs: list[random.Random], sampling: dict) -> None:
    """Judge the student turns that ended (dialogue index, token ids, ended on its own), apply Q-priming, and
    let the teacher answer them all at once; each message passes the leak audit, then joins its dialogue."""
    active = [dialogues[i] for i, *_ in ended]
    turns = [StudentTurn(student.decode(ids), ids) for _, ids, _ in ended]
    env.judge_turns(active, turns)
    if inject is not None:
        inject_questions(inject, active, turns, [inject_rngs[i] for i, *_ in ended], student, sampling)
    briefs = [(d, view) for d, t in zip(active, turns) if (view := env.respond(d, d.turns + 1, t)) is not None]
    for (d, view), message in zip(briefs, teacher.reply_batch([view for _, view in briefs])):
        message = env.audit(d, view, message)
        d.add_teacher_message(message, student.extend(d.ids, d.messages, message), view.hinted)


def run_dialogues(tasks, student: Student, teacher: Teacher, dialogue: settings.Dialogue, *, max_turns: int,
                  variant: str = "full", samples_per_task: int = 1, seed: int = 0, judge: Judge | None = None,
                  inject=None, classifier=None, progress: bool = True, reuse_cache: bool = True) -> list[Dialogue]:
    """Simulate dialogues for every task (``samples_per_task`` each, up to ``max_turns`` student turns: the
    caller picks ``dialogue.train_turns`` or ``dialogue.eval_turns``) and return their final states.

    ``dialogue`` (params.yaml's section) sets the sampling and the leak audit: with ``block_leaks``, a
    teacher message that the audit flags is recorded as a leak and replaced by a plain verdict, so no
    transcript carries the answer. ``judge`` verifies turns (a shared verifier cache; a fresh one when None).
    ``inject``: a ``qprime.Injection`` (training data only): failed turns are replaced by questions, each
    with probability ``decay ** turn``. ``classifier``: labels student turns instead of the rules
    (``strategies.StrategyClassifier``, for real models). ``reuse_cache``: keep each dialogue's KV cache
    between turns, so a turn only runs the teacher's new tokens through the model.
    """
    torch.manual_seed(seed)
    env = Environment(variant, max_turns, dialogue.shard_reveal, dialogue.block_leaks, judge or Judge(), classifier)
    sampling = dict(temperature=dialogue.temperature, top_p=dialogue.top_p, batch_size=dialogue.batch_size)
    dialogues = start(list(tasks), student, teacher, env, samples_per_task, seed)
    # injection draws: each dialogue's own, apart from its sampling stream (which they leave alone)
    inject_rngs = [random.Random(f"inject:{d.stream.initial_seed()}") for d in dialogues]
    decoder = student.decoder(min(dialogue.batch_size, len(dialogues)), dialogue.max_new_tokens,
                              dialogue.temperature, dialogue.top_p, reuse_cache)
    bar = tqdm(total=len(dialogues), desc=f"dialogues ({variant}, {max_turns} turns)", unit="dialogue",
               disable=not progress)

    def next_turns(indices) -> None:
        for i in indices:
            d = dialogues[i]
            if not d.done and len(d.ids) + dialogue.max_new_tokens > student.max_length:
                d.stop = "context"  # its next turn might not fit the student's context
            if d.done:
                decoder.release(i)
            else:
                decoder.add(i, d.ids, d.stream)

    next_turns(range(len(dialogues)))
    ended = []  # student turns waiting for the environment and the teacher
    while decoder.busy or ended:
        ended += decoder.step()
        if ended and decoder.worth(len(ended)):  # the teacher answers in batches
            answer(ended, dialogues, student, teacher, env, inject, inject_rngs, sampling)
            next_turns([i for i, *_ in ended])
            ended = []
            bar.update(sum(d.done for d in dialogues) - bar.n)
            bar.set_postfix(solved=sum(bool(d.solved_turn) for d in dialogues))
    bar.update(len(dialogues) - bar.n)
    bar.close()
    return dialogues
