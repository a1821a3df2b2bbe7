"""An optional LLM judge of what a student turn does, in the seven response strategies of Laban et al.
(2025), "LLMs Get Lost in Multi-Turn Conversation".

The engine needs one of three labels per student turn (``attempt``, ``question``, ``other``): it
decides whether the verifier runs, whether a shard is revealed, and it feeds the premature-answer and
question rates. The rules in ``sml.dialogue.environment.classify`` are right for the scripted toy setting, where
answers end in "The answer is ..." and questions carry a "?". Real models hedge, ask without a
question mark, or discuss the problem at length, and there the rules mislabel turns. This module asks
an LLM for the finer strategy and maps it onto our three labels, reusing the teacher backends of
``sml.dialogue.llm_teacher`` (local HF model or OpenAI-compatible endpoint, retries, disk cache).

A classifier must never stop a stage: an output that names no single strategy falls back to the
rule label, and ``StrategyClassifier.fallbacks`` makes that visible.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sml import settings
from sml.dialogue.llm_teacher import HFTeacher, LLMTeacher, OpenAITeacher
from sml.dialogue.environment import classify

STRATEGIES = ("answer_attempt", "clarification", "interrogation", "discussion", "hedging", "refusal", "missing")
LABEL_OF = {
    "answer_attempt": "attempt", "hedging": "attempt",  # a hedge still commits to answers the verifier can check
    "clarification": "question", "interrogation": "question",
    "discussion": "other", "refusal": "other", "missing": "other",
}
DEFINITIONS = {
    "answer_attempt": "commits to one complete solution: a single final answer, or code for the whole task",
    "clarification": "asks the teacher exactly one question to get missing information",
    "interrogation": "asks the teacher two or more questions",
    "discussion": "talks about the problem (restates it, plans, explains) without giving an answer or asking",
    "hedging": "offers several candidate answers, or an answer that holds only under an assumption it states",
    "refusal": "declines to solve the task or says it cannot",
    "missing": "says nothing of substance: empty, cut off, or unrelated to the task",
}
# Names as models tend to write them: any case, and "answer attempt" / "answer-attempt" too.
_NAME = re.compile(r"(?<![a-z])(answer[\s_-]*attempt|clarification|interrogation|discussion|hedging|refusal|missing)"
                   r"(?![a-z])", re.IGNORECASE)


def build_messages(dialogue: list[dict], reply: str, task: dict) -> list[dict]:
    """The classifier's chat: the definitions, the dialogue so far in transcript roles (teacher =
    ``user``, student = ``assistant``), then the student's reply to classify, fenced in a last message
    so that the judge cannot mistake it for its own turn, and an empty reply is still visibly there."""
    kind = "a programming task (answers are code)" if task["domain"] == "code" else "a math problem"
    system = ("You label the strategy of a student's reply in a tutoring dialogue. The teacher speaks as user, "
              f"the student as assistant; they work on {kind}. The strategies:\n"
              + "\n".join(f"- {name}: the reply {text}." for name, text in DEFINITIONS.items())
              + "\nAnswer with exactly one strategy name from this list and nothing else.")
    ask = (f"The student's next reply, between the markers:\n<reply>\n{reply}\n</reply>\n"
           "Which strategy does this reply use? Answer with one name.")
    return [{"role": "system", "content": system},
            *({"role": m["role"], "content": m["content"]} for m in dialogue),
            {"role": "user", "content": ask}]


def parse_strategy(text: str) -> str | None:
    """The one strategy an LLM output names, else ``None`` (no name, or two different names)."""
    text = text or ""
    try:  # a JSON answer is explicit about which field is the verdict, even if its other fields name more
        value = json.loads(text)
        if isinstance(value, dict) and isinstance(value.get("strategy"), str):
            text = value["strategy"]
    except ValueError:
        pass
    found = {"answer_attempt" if m.lower().startswith("answer") else m.lower() for m in _NAME.findall(text)}
    return found.pop() if len(found) == 1 else None


class StrategyClassifier:
    """Labels student turns with an LLM. ``calls`` counts replies put to the LLM (cache hits included;
    the backend's ``hits``/``misses`` split them), ``fallbacks`` those labelled by the rules instead."""

    def __init__(self, backend: LLMTeacher):
        self.backend = backend
        self.calls = self.fallbacks = 0

    def strategies(self, dialogues: list[list[dict]], replies: list[str], tasks: list[dict]) -> list[str]:
        """A strategy per reply, or ``"unparsed"`` where the LLM output names none."""
        return [s for s, _ in self._judge(dialogues, replies, tasks)]

    def labels(self, dialogues: list[list[dict]], replies: list[str], tasks: list[dict]) -> list[str]:
        """``attempt`` / ``question`` / ``other`` per reply, as the engine uses them."""
        return [label for _, label in self._judge(dialogues, replies, tasks)]

    def _judge(self, dialogues: list[list[dict]], replies: list[str], tasks: list[dict]) -> list[tuple[str, str]]:
        # An empty reply is "missing" by definition: no need to pay for asking.
        asked = [i for i, r in enumerate(replies) if r.strip()]
        prompts = [build_messages(dialogues[i], replies[i], tasks[i]) for i in asked]
        outputs = self.backend.complete(prompts) if prompts else []
        self.calls += len(asked)
        judged = [("missing", LABEL_OF["missing"])] * len(replies)
        for i, output in zip(asked, outputs):
            strategy = parse_strategy(output)
            if strategy is None:
                self.fallbacks += 1
                judged[i] = ("unparsed", classify(replies[i], tasks[i]))
            else:
                judged[i] = (strategy, LABEL_OF[strategy])
        return judged


def make_classifier(classifier: settings.Classifier, out_root: str | Path = ".") -> StrategyClassifier | None:
    """The classifier that ``classifier`` (params.yaml's section) names; ``None`` for ``kind: rules``, where
    the engine keeps ``sml.dialogue.environment.classify``. An LLM caches its answers in
    ``classifier.cache_dir`` under ``out_root``."""
    if classifier.kind == "rules":
        return None
    # Deterministic and short: the answer is one name (or a small JSON object around it).
    common = {"max_new_tokens": 16, "temperature": 0.0,
              "cache_dir": Path(out_root) / classifier.cache_dir if classifier.cache_dir else None}
    if classifier.kind == "hf":
        return StrategyClassifier(HFTeacher(classifier.model, **common))
    return StrategyClassifier(OpenAITeacher(classifier.base_url, classifier.model, api_key_env=classifier.api_key_env,
                                            **common))
