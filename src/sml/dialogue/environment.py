"""The dialogue environment: a dialogue's state and the rules that judge every student turn.

Apart from the student (the model) and the trainer, as in verifiers' ``MultiTurnEnv``, the environment
answers two questions about each student turn. ``respond``: what the turn was (an answer attempt, a
question or other; right or wrong by the verifier) and which shard, on sharded tasks, the teacher's
reply must reveal: the judged turn a teacher puts into words (``TeacherView``). ``stop_reason``:
whether the dialogue is over (solved, or out of turns). It also audits every teacher message for the
answer (``leaks``) and blocks the ones that give it away. The engine (``sml.dialogue.engine``) runs
the rounds; the teacher (``sml.dialogue.teacher``) writes the words.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction

from sml import sandbox
from sml.verify import code as code_verifier
from sml.verify import verify
from sml.verify.math import ANY_NUMBER, extract_answer, parse_number

LABELS = ("attempt", "question", "other")
STEP_REF = re.compile(r"\bsteps?\s+(\d+)", re.IGNORECASE)
_ASKED_STEP = re.compile(r"\bstep\s+(\d+)", re.IGNORECASE)
_CODE_START = re.compile(r"```|^\s*(?:def|class|import|from)\s", re.MULTILINE)
_ANSWER_MARKER = re.compile(r"answer\s*(?:is|:|=)|\\boxed\{", re.IGNORECASE)
EQUATION = re.compile(r"(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)|-\(\s*(-?\d+)\s*\)\s*=\s*(-?\d+)")


@dataclass
class Dialogue:
    """One dialogue's state. ``messages`` use chat roles: the teacher is ``user``, the student ``assistant``.
    Per student turn: ``labels``, ``correct``, ``premature``, ``revealed`` (shards seen when it was
    written), ``injected`` (Q-priming: where a question that replaced the student's own turn came from, else
    ""), ``well_formed`` (see ``well_formed``), ``fixed`` (an attempt that fixes the concrete error the teacher's
    last reply named: see ``fixes``), ``student_ids`` (the generated tokens) and ``turn_starts`` (where they
    begin in ``ids``, the conversation's token ids); per teacher reply: ``leaks`` and ``named`` (the concrete
    error it named, as text: ``step 2 = 35`` or a failing test; "" when none)."""
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
    well_formed: list[bool] = field(default_factory=list)
    fixed: list[bool] = field(default_factory=list)
    named: list[str] = field(default_factory=list)
    error: dict | None = None  # the concrete error the teacher's last reply named (``TeacherView.named``)
    student_ids: list[list[int]] = field(default_factory=list)
    turn_starts: list[int] = field(default_factory=list)  # where each student turn begins in ``ids``
    stream: object = None  # its own random numbers, a torch.Generator (``engine.dialogue_seed``)
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

    def add_student_turn(self, turn: StudentTurn) -> None:
        self.revealed.append(len(self.shown))
        self.messages.append({"role": "assistant", "content": turn.text})
        self.turn_starts.append(len(self.ids))
        self.ids = self.ids + turn.ids
        self.student_ids.append(turn.ids)
        self.labels.append(turn.label)
        self.injected.append(turn.injected)
        self.correct.append(turn.correct)
        self.premature.append(turn.label == "attempt" and len(self.shown) < self.n_shards)
        self.well_formed.append(well_formed(turn, self.task))
        self.fixed.append(self.error is not None and turn.label == "attempt" and fixes(self.error, turn))

    def add_teacher_message(self, message: str, ids: list[int], hinted: bool) -> None:
        """``ids``: the conversation's token ids with ``message`` appended."""
        self.ids = ids
        self.messages.append({"role": "user", "content": message})
        self.hints_given += hinted


@dataclass
class StudentTurn:
    """One student turn as generated (``text``, ``ids``) and as judged (``label``,
    ``check``: the verifier's report on an attempt, else None). ``injected``: see ``Dialogue``."""
    text: str
    ids: list[int]
    label: str = ""
    check: dict | None = None
    injected: str = ""

    @property
    def correct(self) -> bool:
        return bool(self.check and self.check["passed"])


@dataclass
class TeacherView:
    """A judged student turn: everything a teacher may use to write one reply.

    ``label`` and ``check`` are the environment's judgement of the student's last turn (``check`` is the
    verifier's report on an attempt, else ``None``); ``reveal`` is the shard text this reply must
    reveal (sharded tasks), else ``None``; ``turn`` counts student turns so far (1-based).
    """
    task: dict
    variant: str
    messages: list[dict]
    label: str
    check: dict | None = None
    reveal: str | None = None
    turn: int = 1
    hints_given: int = 0
    hinted: bool = False  # set by a teacher that gave away a reference step (the dialogue counts them)
    # set by a teacher whose reply names a concrete error: {"step": k, "value": "7"} (the k-th equation of the
    # student's work should end in 7) or {"test": "assert f(3) == 4"} (a failing test, expected vs actual),
    # with "said": the part of the reply that names it
    named: dict | None = None


# --- judging a student turn ---------------------------------------------------------------------------

def classify(text: str, task: dict) -> str:
    """Label a student turn: ``attempt`` (states an answer / writes code), ``question`` or ``other``."""
    if task["domain"] == "code":
        if _CODE_START.search(text):
            return "attempt"
        return "question" if "?" in text else "other"
    if "?" in text and not _ANSWER_MARKER.search(text):
        return "question"
    return "attempt" if extract_answer(text) is not None else "other"


class Judge:
    """Runs the verifier on attempts; code checks go to a ``sandbox.Pool`` (started on the first one)
    from a thread pool, math checks run in place; all are cached per (task, answer), since a student often
    repeats itself."""

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
        if todo and self.pool is None:  # nothing to run in the sandbox: threads would only cost their start
            self.cache.update({k: verify(*tr) for k, tr in todo.items()})
        elif todo:
            with ThreadPoolExecutor(self.workers) as threads:
                for k, result in zip(todo, threads.map(lambda tr: verify(*tr, runner=self.pool.run), todo.values())):
                    self.cache[k] = result
        return [self.cache[k] if k else None for k in keys]


def well_formed(turn: StudentTurn, task: dict) -> bool:
    """A question, or an attempt the verifier could read: a final answer it parsed (math), code that
    loaded and so could be run against the tests (code)."""
    if turn.label != "attempt":
        return turn.label == "question"
    return turn.check["extracted"] is not None if task["domain"] == "math" else turn.check["load_error"] is None


def step_values(text: str) -> list[Fraction]:
    """What each equation of a worked answer comes to ("3 + 4 = 7" -> 7), in order: step k is the k-th."""
    return [Fraction(m.group(4) or m.group(6)) for m in EQUATION.finditer(text)]


def fixes(error: dict, turn: StudentTurn) -> bool:
    """Whether an attempt fixes the ``error`` the teacher named: it is right, or the named step of its work
    now has the right value, or the named test now passes."""
    if turn.correct:
        return True
    if "test" in error:
        return any(r["test"] == error["test"] and r["passed"] for r in turn.check.get("results", []))
    values = step_values(turn.text)
    return len(values) >= error["step"] and values[error["step"] - 1] == Fraction(error["value"])


# --- the leak audit ------------------------------------------------------------------------------------

def _normalise_code(line: str) -> str:
    return re.sub(r"\s+", "", line)


def _solution_lines(solution: str) -> list[str]:
    """The lines that make up a reference solution's body (no ``def``, blanks, comments or docstrings)."""
    body = re.sub(r'("""|\'\'\')(?:.|\n)*?\1', "", solution)
    lines = [_normalise_code(l) for l in body.splitlines()]
    return [l for l in lines if l and not l.startswith(("#", "def", "@"))]


def leaks(message: str, task: dict) -> bool:
    """Whether a teacher message gives the final answer away.

    Math: the answer's value appears as a number in the message, once the task's own statement
    (prompt, shards) and step references ("step 2") are set aside. Code: every line of the
    reference solution's body appears in the message.
    """
    if task["domain"] == "code":
        lines = _solution_lines(task["solution"])
        if not lines:
            return False
        said = _normalise_code(message)
        return all(line in said for line in lines)
    answer = parse_number(task["answer"])
    if answer is None:  # symbolic answers: the exact string
        return task["answer"].strip() in message
    text = message
    for public in sorted([task["prompt"], *task["shards"]], key=len, reverse=True):
        text = text.replace(public, " ")
    text = STEP_REF.sub(" ", text)
    return any(parse_number(n) == answer for n in ANY_NUMBER.findall(text.replace("\u2212", "-")))


# --- the environment ------------------------------------------------------------------------------------

class Environment:
    """The rules of one run of dialogues (``variant``, ``max_turns``, ``shard_reveal``, ``block_leaks``:
    see ``engine.run_dialogues``). ``judge`` verifies attempts; ``classifier`` labels turns instead of
    the rules (``strategies.StrategyClassifier``, for real models)."""

    def __init__(self, variant: str, max_turns: int, shard_reveal: str, block_leaks: bool, judge: Judge,
                 classifier=None):
        self.variant, self.max_turns, self.shard_reveal, self.block_leaks = variant, max_turns, shard_reveal, block_leaks
        self.judge, self.classifier = judge, classifier

    def open(self, task: dict, sample: int, messages: list[dict], ids: list[int]) -> Dialogue:
        """A dialogue that starts with the teacher's opening ``messages``; on sharded tasks the
        student has seen shard 0 (the intent)."""
        n_shards = len(task["shards"]) if self.variant == "sharded" else 0
        return Dialogue(task=task, variant=self.variant, sample=sample, messages=list(messages), ids=list(ids),
                        n_shards=n_shards, shown={0} if n_shards else set())

    def judge_turns(self, dialogues: list[Dialogue], turns: list[StudentTurn]) -> None:
        """Label every turn and verify the attempts, all dialogues at once (both may run models)."""
        replies = [t.text for t in turns]
        if self.classifier is not None:
            labels = self.classifier.labels([d.messages for d in dialogues], replies, [d.task for d in dialogues])
        else:
            labels = [classify(r, d.task) for d, r in zip(dialogues, replies)]
        for t, label, check in zip(turns, labels, self.judge.checks(dialogues, replies, labels)):
            t.label, t.check = label, check

    def respond(self, d: Dialogue, turn: int, student: StudentTurn) -> TeacherView | None:
        """Record the judged student turn (the ``turn``-th); the teacher's brief for its reply, or None
        when the dialogue is over."""
        d.add_student_turn(student)
        d.stop = self.stop_reason(d, turn)
        if d.done:
            if d.stop == "solved":
                d.solved_turn = turn
            return None
        reveal = self.shard_to_reveal(d, student.label, student.text) if d.n_shards else None
        if reveal is not None:
            d.shown.add(reveal)
        return TeacherView(task=d.task, variant=d.variant, messages=d.messages, label=student.label,
                           check=student.check, reveal=d.task["shards"][reveal] if reveal is not None else None,
                           turn=turn, hints_given=d.hints_given)

    def stop_reason(self, d: Dialogue, turn: int) -> str:
        """Why the dialogue ends after student turn ``turn``, or "" when it goes on."""
        if d.correct[-1]:
            return "solved"
        return "max_turns" if turn == self.max_turns else ""

    def shard_to_reveal(self, d: Dialogue, label: str, text: str) -> int | None:
        """Which shard the next teacher reply reveals: the one asked for ("step 2"), else the next unseen
        one; on every turn, or only when asked (``shard_reveal``). At most one per turn."""
        hidden = [i for i in range(1, d.n_shards) if i not in d.shown]
        if not hidden or (self.shard_reveal == "on_question" and label != "question"):
            return None
        asked = _ASKED_STEP.search(text) if label == "question" else None
        if asked and int(asked.group(1)) in hidden:
            return int(asked.group(1))
        return hidden[0]

    def audit(self, d: Dialogue, view: TeacherView, message: str) -> str:
        """Record whether the teacher's ``message`` leaks the answer; with ``block_leaks`` one that does is
        replaced by a plain verdict (and the shard it had to reveal), so no transcript carries the answer.
        Also records the concrete error the message names, which the student's next turn may fix."""
        leaked = leaks(message, d.task)
        d.leaks.append(leaked)
        d.error = None if leaked and self.block_leaks else view.named  # a blocked message names nothing
        d.named.append("" if d.error is None else d.error.get("test") or f"step {d.error['step']} = {d.error['value']}")
        if leaked and self.block_leaks:
            return "That is not right. Try again." + (f" Here is more information. {view.reveal}" if view.reveal else "")
        return message
