"""The dialogue engine: many teacher-student dialogues advanced together.

The student writes turns in a continuously refilled batch (``sml.dialogue.decoding``); the turns that
ended are gathered, the environment (``sml.dialogue.environment``) judges them, the teacher replies to all
of them at once, and those dialogues rejoin the batch for their next turn while the others still write.
A dialogue ends when the student answers correctly or after ``max_turns`` student turns. Students that
sample elsewhere (a server, vLLM) advance every dialogue in rounds instead: one ``generate`` per turn.
Each dialogue samples from its own random stream (``dialogue_seed``), so what it draws does not depend on
which other dialogues share its batch, and one run may hold groups of dialogues under different rules and
seeds (``Group``, ``run_groups``: an evaluation's cells), each drawing what it would draw in a run of its own.
(The logits may differ in their last bits with the batch's shape, as with any batch size, which can move a
sampled token that sits right at a boundary; rare, see ``scripts/bench_cells.py``.) The same engine collects
SFT data, produces GRPO rollouts (it keeps the student's generated token ids) and runs evaluation.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass

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


@dataclass
class Group:
    """Dialogues under one set of rules and one seed: ``samples_per_task`` dialogues of each task, up to
    ``max_turns`` student turns each, on the ``variant``; ``classifier``: see ``run_dialogues``. One run of
    the engine may hold many groups (``run_groups``), each drawing what it would draw alone."""
    tasks: list
    max_turns: int
    variant: str = "full"
    samples_per_task: int = 1
    seed: int = 0
    classifier: object = None


def start(group: Group, student: Student, teacher: Teacher, env: Environment) -> list[Dialogue]:
    """Open the group's dialogues, each with its own random stream: the teacher states the problem (or its
    intent)."""
    dialogues, seen = [], Counter()
    for task in group.tasks:
        messages = [{"role": "user", "content": teacher.open(task, env.variant)}]
        ids = student.prompt_ids(messages)
        for k in range(group.samples_per_task):
            d = env.open(task, k, messages, ids)
            d.stream = torch.Generator().manual_seed(dialogue_seed(group.seed, task["id"], seen[task["id"]]))
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


def answer(ended: list[tuple], dialogues: list[Dialogue], envs: list[Environment], student: Student,
           teacher: Teacher, inject, inject_rngs: list[random.Random], sampling: dict) -> None:
    """Judge the student turns that ended (dialogue index, token ids, ended on its own), each under its
    dialogue's environment (``envs``), apply Q-priming, and let the teacher answer them all at once; each
    message passes the leak audit, then joins its dialogue."""
    indices = [i for i, *_ in ended]
    turns = [StudentTurn(student.decode(ids), ids) for _, ids, _ in ended]
    for env in dict.fromkeys(envs[i] for i in indices):  # each environment judges its turns at once
        mine = [k for k, i in enumerate(indices) if envs[i] is env]
        env.judge_turns([dialogues[indices[k]] for k in mine], [turns[k] for k in mine])
    active = [dialogues[i] for i in indices]
    if inject is not None:
        inject_questions(inject, active, turns, [inject_rngs[i] for i in indices], student, sampling)
    briefs = [(i, view) for i, t in zip(indices, turns)
              if (view := envs[i].respond(dialogues[i], dialogues[i].turns + 1, t)) is not None]
    for (i, view), message in zip(briefs, teacher.reply_batch([view for _, view in briefs])):
        d = dialogues[i]
        message = envs[i].audit(d, view, message)
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
    group = Group(list(tasks), max_turns, variant, samples_per_task, seed, classifier)
    [dialogues] = run_groups([group], student, teacher, dialogue, judge=judge, inject=inject, progress=progress,
                             reuse_cache=reuse_cache)
    return dialogues


def run_groups(groups: list[Group], student: Student, teacher: Teacher, dialogue: settings.Dialogue, *,
               judge: Judge | None = None, inject=None, progress: bool = True,
               reuse_cache: bool = True) -> list[list[Dialogue]]:
    """``run_dialogues`` for several groups of dialogues in one run (one batch, one teacher): each group's
    dialogues, in its order. A dialogue draws from its own stream, seeded by its group's seed, so each group
    gets the dialogues it would get in a run of its own (see the module's note on logits). Students that sample
    elsewhere, whose server takes one seed per request, draw from torch's global generator instead, seeded here
    by the first group's seed: reproducible, but not the dialogues of separate runs."""
    torch.manual_seed(groups[0].seed)
    judge = judge or Judge()
    rules = [Environment(g.variant, g.max_turns, dialogue.shard_reveal, dialogue.block_leaks, judge, g.classifier)
             for g in groups]
    runs = [start(group, student, teacher, env) for group, env in zip(groups, rules)]
    dialogues = [d for run in runs for d in run]
    envs = [env for env, run in zip(rules, runs) for _ in run]  # each dialogue's environment
    sampling = dict(temperature=dialogue.temperature, top_p=dialogue.top_p, batch_size=dialogue.batch_size)
    # injection draws: each dialogue's own, apart from its sampling stream (which they leave alone)
    inject_rngs = [random.Random(f"inject:{d.stream.initial_seed()}") for d in dialogues]
    decoder = student.decoder(min(dialogue.batch_size, len(dialogues)), dialogue.max_new_tokens,
                              dialogue.temperature, dialogue.top_p, reuse_cache)
    what = f"{groups[0].variant}, {groups[0].max_turns} turns" if len(groups) == 1 else f"{len(groups)} groups"
    bar = tqdm(total=len(dialogues), desc=f"dialogues ({what})", unit="dialogue", disable=not progress)

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
            answer(ended, dialogues, envs, student, teacher, inject, inject_rngs, sampling)
            next_turns([i for i, *_ in ended])
            ended = []
            if progress:  # counted over every dialogue: not for nothing in a run of thousands
                bar.update(sum(d.done for d in dialogues) - bar.n)
                bar.set_postfix(solved=sum(bool(d.solved_turn) for d in dialogues))
    bar.update(len(dialogues) - bar.n)
    bar.close()
    return runs
