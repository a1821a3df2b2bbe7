"""The dialogue engine: many teacher-student dialogues advanced together.

Each round: one batched student ``generate`` over every active dialogue, then the environment judges
every student turn (label, verifier, which shard to reveal), then the teacher replies to all of them.
A dialogue ends when the student answers correctly or after ``max_turns`` student turns; finished
dialogues drop out of the batch. The same engine collects SFT data, produces GRPO rollouts (it keeps
the student's generated token ids) and runs evaluation.
"""

from __future__ import annotations

import random
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from sml import sandbox
from sml.dialogue.student import Student
from sml.dialogue.teacher import Teacher, TeacherView, classify, leaks
from sml.verify import code as code_verifier
from sml.verify import verify

SHARD_REVEAL = ("every_turn", "on_question")
_ASKED_STEP = re.compile(r"\bstep\s+(\d+)", re.IGNORECASE)


@dataclass
class Dialogue:
    """One dialogue's state. ``messages`` use chat roles: the teacher is ``user``, the student ``assistant``.
    Per student turn: ``labels``, ``correct``, ``premature``, ``revealed`` (shards seen when it was
    written), ``injected`` (Q-priming: where a question that replaced the student's own turn came from, else
    ""), ``student_ids`` (the generated tokens) and ``turn_starts`` (where they begin in ``ids``, the
    conversation's token ids); per teacher reply: ``leaks``."""
    task: dict
    variant: str
    sample: int
    messages: list[dict]
    ids: list[int]
    n_shards: int = 0
    shown: set = field(default_factory=set)
    labels: list[str] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    premature: list[bool] = field(default_factory=list)
    revealed: list[int] = field(default_factory=list)
    leaks: list[bool] = field(default_factory=list)
    injected: list[str] = field(default_factory=list)
    student_ids: list[list[int]] = field(default_factory=list)
    turn_starts: list[int] = field(default_factory=list)  # where each student turn begins in ``ids``
    past: object = None  # the student's KV cache of ``ids`` (kept between turns; see Student.generate)
    hints_given: int = 0
    solved_turn: int = 0
    stop: str = ""

    @property
    def done(self) -> bool:
        return bool(self.stop)

    @property
    def turns(self) -> int:
        return len(self.labels)

    def reward(self, gamma: float) -> float:
        """Sparse, discounted: ``gamma ** (t - 1)`` when solved at student turn ``t``, else 0."""
        return gamma ** (self.solved_turn - 1) if self.solved_turn else 0.0


def check_settings(max_turns: int, gamma: float, variant: str, shard_reveal: str, samples_per_task: int) -> None:
    """Reject bad engine settings by name before any generation starts."""
    if not isinstance(max_turns, int) or max_turns < 1:
        raise ValueError(f"dialogue.max_turns: must be a positive integer, got {max_turns!r}")
    if not 0 < gamma <= 1:
        raise ValueError(f"dialogue.gamma: must be in (0, 1], got {gamma!r}")
    if variant not in ("full", "sharded"):
        raise ValueError(f"dialogue.variant: must be 'full' or 'sharded', got {variant!r}")
    if shard_reveal not in SHARD_REVEAL:
        raise ValueError(f"dialogue.shard_reveal: must be one of {SHARD_REVEAL}, got {shard_reveal!r}")
    if not isinstance(samples_per_task, int) or samples_per_task < 1:
        raise ValueError(f"dialogue.samples_per_task: must be a positive integer, got {samples_per_task!r}")


def _shard_to_reveal(d: Dialogue, label: str, text: str, shard_reveal: str) -> int | None:
    """Which shard the next teacher reply reveals: the one asked for ("step 2"), else the next unseen
    one; on every turn, or only when asked (``shard_reveal``). At most one per turn."""
    hidden = [i for i in range(1, d.n_shards) if i not in d.shown]
    if not hidden or (shard_reveal == "on_question" and label != "question"):
        return None
    asked = _ASKED_STEP.search(text) if label == "question" else None
    if asked and int(asked.group(1)) in hidden:
        return int(asked.group(1))
    return hidden[0]


class Judge:
    """Runs the verifier on attempts; code checks go to a ``sandbox.Pool`` (started on the first one)
    from a thread pool and are cached per (task, code), since a student often repeats itself."""

    def __init__(self, workers: int = 2):
        self.workers = workers
        self.cache: dict[tuple[str, str], dict] = {}
        self.pool = None  # sandbox.Pool(workers), started on the first code check

    def checks(self, dialogues: list[Dialogue], replies: list[str], labels: list[str]) -> list[dict | None]:
        keys = [(d.task["id"], code_verifier.extract_code(r) if d.task["domain"] == "code" else r)
                if label == "attempt" else None for d, r, label in zip(dialogues, replies, labels)]
        todo = {k: (d.task, r) for k, d, r in zip(keys, dialogues, replies) if k and k not in self.cache}
        if self.pool is None and any(task["domain"] == "code" for task, _ in todo.values()):
            self.pool = sandbox.Pool(self.workers)
        if todo:
            runner = self.pool.run if self.pool is not None else None
            with ThreadPoolExecutor(self.workers) as threads:
                for k, result in zip(todo, threads.map(lambda tr: verify(*tr, runner=runner), todo.values())):
                    self.cache[k] = result
        return [self.cache[k] if k else None for k in keys]


def start(tasks, student: Student, teacher: Teacher, variant: str, samples_per_task: int) -> list[Dialogue]:
    """Open one dialogue per task and sample: the teacher states the problem (or its intent)."""
    dialogues = []
    for task in tasks:
        opening = teacher.open(task, variant)
        messages = [{"role": "user", "content": opening}]
        ids = student.prompt_ids(messages)
        n_shards = len(task["shards"]) if variant == "sharded" else 0
        for k in range(samples_per_task):
            dialogues.append(Dialogue(task=task, variant=variant, sample=k, messages=list(messages), ids=list(ids),
                                      n_shards=n_shards, shown={0} if n_shards else set()))
    return dialogues


def run_dialogues(tasks, student: Student, teacher: Teacher, *, variant: str = "full", max_turns: int = 4,
                  samples_per_task: int = 1, shard_reveal: str = "every_turn", max_new_tokens: int = 96,
                  temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 64, seed: int = 0,
                  block_leaks: bool = True, workers: int = 2, gamma: float = 0.7, progress: bool = True,
                  judge: Judge | None = None, reuse_cache: bool = True, inject=None,
                  classifier=None) -> list[Dialogue]:
    """Simulate dialogues for every task (``samples_per_task`` each) and return their final states.

    ``block_leaks``: a teacher message that the leak audit flags is recorded as a leak and replaced by a
    plain verdict, so no transcript carries the answer (set False to study a leaky teacher).
    ``reuse_cache``: keep each dialogue's KV cache between turns, so a turn only runs the teacher's new
    tokens through the model instead of the whole conversation again.
    ``inject``: a ``qprime.Injection`` (training data only): failed turns are replaced by questions, each
    with probability ``decay ** turn``. ``classifier``: labels student turns instead of the rules
    (``strategies.StrategyClassifier``, for real models).
    """
    check_settings(max_turns, gamma, variant, shard_reveal, samples_per_task)
    reuse_cache = reuse_cache and student.pieces is not None  # caches stay valid only while ids only grow
    tasks = list(tasks)
    torch.manual_seed(seed)
    judge = judge or Judge(workers)
    inject_rng = random.Random(seed)  # its own stream: injection draws leave the student's sampling alone
    dialogues = start(tasks, student, teacher, variant, samples_per_task)
    bar = tqdm(total=len(dialogues), desc=f"dialogues ({variant}, {max_turns} turns)", unit="dialogue",
               disable=not progress)
    for turn in range(1, max_turns + 1):
        active = [d for d in dialogues if not d.done]
        for d in active:
            if len(d.ids) + max_new_tokens > student.max_length:
                d.stop = "context"
        active = [d for d in active if not d.done]
        if not active:
            break
        pasts = [d.past for d in active] if reuse_cache else None
        generated = student.generate([d.ids for d in active], max_new_tokens, temperature, top_p, batch_size, pasts)
        replies = [student.decode(ids) for ids, _ in generated]
        if classifier is not None:
            labels = classifier.labels([d.messages for d in active], replies, [d.task for d in active])
        else:
            labels = [classify(r, d.task) for d, r in zip(active, replies)]
        checks = judge.checks(active, replies, labels)
        injected = [""] * len(active)
        if inject is not None:
            chosen = inject.choose(turn, active, [bool(c and c["passed"]) for c in checks], inject_rng)
            asked = inject.questions([active[i] for i in chosen], [replies[i] for i in chosen],
                                     [checks[i] for i in chosen], student,
                                     dict(temperature=temperature, top_p=top_p, batch_size=batch_size))
            for i, (question, how) in zip(chosen, asked):
                replies[i], labels[i], checks[i], injected[i] = question, "question", None, how
                generated[i] = (student.encode(question), True)
                if pasts is not None:
                    pasts[i] = None  # the cache covers the words that were replaced
        views = []
        for k, (d, (ids, _), reply, label, check) in enumerate(zip(active, generated, replies, labels, checks)):
            d.past = pasts[k] if pasts is not None else None
            d.revealed.append(len(d.shown))
            d.messages.append({"role": "assistant", "content": reply})
            d.turn_starts.append(len(d.ids))
            d.ids = d.ids + ids
            d.student_ids.append(ids)
            d.labels.append(label)
            d.injected.append(injected[k])
            d.correct.append(bool(check and check["passed"]))
            d.premature.append(label == "attempt" and len(d.shown) < d.n_shards)
            if d.correct[-1]:
                d.solved_turn, d.stop, d.past = turn, "solved", None
            elif turn == max_turns:
                d.stop, d.past = "max_turns", None
            else:
                reveal = _shard_to_reveal(d, label, reply, shard_reveal) if d.n_shards else None
                if reveal is not None:
                    d.shown.add(reveal)
                views.append(TeacherView(task=d.task, variant=variant, messages=d.messages, label=label, check=check,
                                         reveal=d.task["shards"][reveal] if reveal is not None else None,
                                         turn=turn, hints_given=d.hints_given))
        waiting = [d for d in active if not d.done]
        for d, view, message in zip(waiting, views, teacher.reply_batch(views)):
            leaked = leaks(message, d.task)
            d.leaks.append(leaked)
            if leaked and block_leaks:
                message = "That is not right. Try again." + (f" Here is more information. {view.reveal}" if view.reveal else "")
            d.hints_given += view.hinted
            d.ids = student.extend(d.ids, d.messages, message)
            d.messages.append({"role": "user", "content": message})
        bar.update(sum(d.done for d in dialogues) - bar.n)
        bar.set_postfix(turn=turn, solved=sum(bool(d.solved_turn) for d in dialogues))
    for d in dialogues:
        d.stop = d.stop or "max_turns"
    bar.update(len(dialogues) - bar.n)
    bar.close()
    return dialogues
