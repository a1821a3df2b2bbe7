"""The dialogue engine: many teacher-student dialogues advanced together.

Each round: one batched student ``generate`` over every active dialogue, then the environment
(``sml.dialogue.environment``) judges every student turn, then the teacher replies to all of them.
A dialogue ends when the student answers correctly or after ``max_turns`` student turns; finished
dialogues drop out of the batch. Each dialogue samples from its own random stream (``dialogue_seed``), so
what it draws does not depend on which other dialogues share its batch. The same engine collects SFT
data, produces GRPO rollouts (it keeps the student's generated token ids) and runs evaluation.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import torch
from tqdm.auto import tqdm

from sml import settings
from sml.dialogue.environment import Dialogue, Environment, Judge, StudentTurn, TeacherView
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


def dialogues_with_room(dialogues: list[Dialogue], student: Student, max_new_tokens: int) -> list[Dialogue]:
    """The dialogues still going on; one whose next turn might not fit the student's context stops here."""
    active = [d for d in dialogues if not d.done]
    for d in active:
        if len(d.ids) + max_new_tokens > student.max_length:
            d.stop = "context"
    return [d for d in active if not d.done]


def student_turns(student: Student, dialogues: list[Dialogue], max_new_tokens: int, sampling: dict,
                  reuse_cache: bool) -> list[StudentTurn]:
    """One batched ``generate`` over every dialogue (from its KV cache when ``reuse_cache``), each sampling
    from its own random stream."""
    pasts = [d.past for d in dialogues] if reuse_cache else None  # generate updates them in place
    generated = student.generate([d.ids for d in dialogues], max_new_tokens, pasts=pasts,
                                 streams=[d.stream for d in dialogues], **sampling)
    return [StudentTurn(student.decode(ids), ids, pasts[k] if pasts is not None else None)
            for k, (ids, _) in enumerate(generated)]


def inject_questions(inject, turn: int, dialogues: list[Dialogue], turns: list[StudentTurn], student: Student,
                     sampling: dict, rng: random.Random) -> None:
    """Q-priming: replace some failed turns by questions (in place)."""
    chosen = inject.choose(turn, dialogues, [t.correct for t in turns], rng)
    asked = inject.questions([dialogues[i] for i in chosen], [turns[i].text for i in chosen],
                             [turns[i].check for i in chosen], student, sampling)
    for i, (question, how) in zip(chosen, asked):
        # no KV cache: it covers the words that were replaced
        turns[i] = StudentTurn(question, student.encode(question), label="question", injected=how)


def teacher_replies(teacher: Teacher, student: Student, env: Environment,
                    briefs: list[tuple[Dialogue, TeacherView]]) -> None:
    """The teacher answers every judged turn at once; each message passes the leak audit, then joins its dialogue."""
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
    reuse_cache = reuse_cache and student.pieces is not None  # caches stay valid only while ids only grow
    torch.manual_seed(seed)
    env = Environment(variant, max_turns, dialogue.shard_reveal, dialogue.block_leaks, judge or Judge(), classifier)
    inject_rng = random.Random(seed)  # its own stream: injection draws leave the student's sampling alone
    sampling = dict(temperature=dialogue.temperature, top_p=dialogue.top_p, batch_size=dialogue.batch_size)
    dialogues = start(list(tasks), student, teacher, env, samples_per_task, seed)
    bar = tqdm(total=len(dialogues), desc=f"dialogues ({variant}, {max_turns} turns)", unit="dialogue",
               disable=not progress)
    for turn in range(1, max_turns + 1):
        active = dialogues_with_room(dialogues, student, dialogue.max_new_tokens)
        if not active:
            break
        turns = student_turns(student, active, dialogue.max_new_tokens, sampling, reuse_cache)
        env.judge_turns(active, turns)
        if inject is not None:
            inject_questions(inject, turn, active, turns, student, sampling, inject_rng)
        briefs = [(d, view) for d, t in zip(active, turns) if (view := env.respond(d, turn, t)) is not None]
        teacher_replies(teacher, student, env, briefs)
        bar.update(sum(d.done for d in dialogues) - bar.n)
        bar.set_postfix(turn=turn, solved=sum(bool(d.solved_turn) for d in dialogues))
    bar.update(len(dialogues) - bar.n)
    bar.close()
    return dialogues
