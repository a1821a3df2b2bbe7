"""Q-priming (paper.md, "Training variants"): teach the student that asking is a move.

While training dialogues are collected, a student turn that did not solve the task at student turn
``t`` is replaced, with probability ``decay ** t`` (the paper: 0.75), by an informative question; the
teacher answers it and the dialogue goes on. Early turns are replaced most often, so the data shows
asking first and answering once the missing piece is known. SFT on those dialogues, then online SML,
gives the condition ``sml_qprime``. Training time only: evaluation never injects.

The paper's question is written by the student model, prompted with its failed attempt and the
teacher's private knowledge (``source = "model"``). A student that has never seen a question (our
embedded one) rarely writes one, so ``source = "template"`` builds the question from the same two
things by rule: which reference step the attempt first gets wrong (math), or which hidden test it
fails (code). Every injected turn is labelled with where its question came from, and a model-written
question that is not a question, or that leaks the answer, is replaced by the template's (counted).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sml.dialogue.environment import TeacherView, classify, leaks
from sml.dialogue.teacher import _EQUATION, _TEST_CALL, private_knowledge
from sml.tasks.schema import metadata
from sml.tasks.toy_math import steps_of
from sml.verify.math import parse_number


def injection_probability(turn: int, decay: float = 0.75) -> float:
    """The chance that a failed student turn ``turn`` (1-based) is replaced by a question."""
    return decay ** turn


# --- the template question ------------------------------------------------------------------------

def _first_wrong_step(task: dict, attempt: str, told: int) -> tuple[int, int]:
    """(k, n): the first reference step after the ``told`` ones whose result the attempt does not reach,
    and the number of steps."""
    expression = metadata(task).get("expression")
    steps = steps_of(expression) if expression else []
    reached = {parse_number(m.group(4) or m.group(6)) for m in _EQUATION.finditer(attempt)}
    for k, step in enumerate(steps, 1):
        if k > told and step["value"] not in reached:
            return k, len(steps)
    return len(steps), len(steps)


def template_question(task: dict, attempt: str, check: dict | None, dialogue: list[dict] = (), told: int = 0) -> str:
    """An information request grounded in the private knowledge and the failed attempt: the first step
    it gets wrong that the teacher has not ``told`` yet (math), the first failing test not yet shown in
    the ``dialogue`` (code)."""
    if task["domain"] == "math":
        k, n = _first_wrong_step(task, attempt, told)
        if n > 1:
            return f"I am not sure about step {k}. What is step {k}?"
        return "I am not sure how to start. Which operation comes first?"
    said = " ".join(m["content"] for m in dialogue)
    results = (check or {}).get("results") or []
    failing = [r["test"] for r in results if not r["passed"]] or list(task["tests"])
    failing = [t for t in failing if t not in said] or failing
    call = _TEST_CALL.match(failing[0].strip()) if failing else None
    if call:
        return f"What should {call.group(1)} return?"
    return "Which steps should the function apply?"


# --- the student's own question ---------------------------------------------------------------------

def question_prompt(view: TeacherView, attempt: str) -> list[dict]:
    """The chat the student completes to write its own question (the paper's prompt, in our words)."""
    return [{"role": "user", "content": (
        f"{view.task['prompt']}\n\nYour answer was:\n{attempt}\n\nIt is not right. What the teacher knows:\n"
        f"{private_knowledge(view)}\n\nWrite one short question to the teacher that would help you get it right. "
        "Do not give an answer.")}]


@dataclass
class Injection:
    """The Q-priming settings the engine applies to every failed student turn (``engine.run_dialogues``)."""
    decay: float  # q_priming.decay
    source: str  # q_priming.question_source: "template" or "model"
    max_new_tokens: int = 48
    counts: dict = field(default_factory=lambda: {"turns": 0, "injected": 0, "model": 0, "template": 0})

    def choose(self, turn: int, dialogues, correct: list[bool], rng: random.Random) -> list[int]:
        """Which of this turn's dialogues get a question: one draw per failed turn, in dialogue order."""
        chosen = []
        for i, ok in enumerate(correct):
            if not ok:
                self.counts["turns"] += 1
                if rng.random() < injection_probability(turn, self.decay):
                    chosen.append(i)
        return chosen

    def questions(self, dialogues, attempts: list[str], checks: list[dict | None], student,
                  generation: dict) -> list[tuple[str, str]]:
        """(question, where it came from) for each chosen dialogue."""
        chosen = list(zip(dialogues, attempts, checks))
        templated = [template_question(d.task, a, c, d.messages, d.hints_given) for d, a, c in chosen]
        written = [None] * len(dialogues)
        if self.source == "model" and dialogues:
            views = [TeacherView(task=d.task, variant=d.variant, messages=d.messages, label="attempt", check=c)
                     for d, _, c in chosen]
            prompts = [student.prompt_ids(question_prompt(v, a)) for v, (_, a, _) in zip(views, chosen)]
            out = student.generate(prompts, self.max_new_tokens, generation.get("temperature", 1.0),
                                   generation.get("top_p", 1.0), generation.get("batch_size", 64))
            written = [student.decode(ids).strip() for ids, _ in out]
        result = []
        for d, own, fallback in zip(dialogues, written, templated):
            usable = own and classify(own, d.task) == "question" and not leaks(own, d.task)
            result.append((own, "model") if usable else (fallback, "template"))
        for _, how in result:
            self.counts["injected"] += 1
            self.counts[how] += 1
        return result
