"""The base student's calibration: checked on the base alone, per domain, on held-out (dev) tasks, before any
SML is trained on a world. The criteria are fixed in advance (issue 21, design section 2):

- ``sr1``: its one-turn solve rate lies in ``SR1_RANGE``, so there is room to learn and something to build on;
- ``well_formed_after_feedback``: at least ``MIN_WELL_FORMED`` of its turns after feedback are a parseable
  answer attempt in the domain's format or a question (``environment.well_formed``), so it holds a dialogue.

Without a target, it also records whether its solve rate after feedback is below that of a fresh retry (the
paper's premise: a base that has never seen feedback does not use it).
"""

from __future__ import annotations

import json
import re
from collections import Counter

from sml import settings
from sml.evaluation import transcripts
from sml.evaluation.evaluate import Cell, evaluate_cells

SR1_RANGE = (0.2, 0.6)
MIN_WELL_FORMED = 0.9


def after_feedback(data) -> tuple[int, int]:
    """``(well-formed turns, turns)`` over the student turns at turn >= 2: each answers a teacher reply to the
    student's previous turn (a dialogue only goes on after a turn that did not solve it)."""
    formed = [f for fs in data["well_formed"] for f in fs[1:]]
    return sum(formed), len(formed)


def rate(name: str, hits: int, n: int) -> dict:
    """``name`` as a rate with its 95% Wilson interval (``name_low``, ``name_high``) and its count ``name_n``."""
    low, high = transcripts.wilson(hits, n)
    return {name: hits / n if n else 0.0, f"{name}_low": low, f"{name}_high": high, f"{name}_n": n}


def criteria(scores: dict, domain: str) -> dict:
    """Whether each fixed criterion holds (``sr1_ok_<domain>``, ``well_formed_ok_<domain>``) and whether
    feedback leaves the base below a fresh retry (``feedback_below_retry_<domain>``, no target)."""
    sr1, formed = scores[f"sr1_{domain}"], scores[f"well_formed_after_feedback_{domain}"]
    return {f"sr1_ok_{domain}": SR1_RANGE[0] <= sr1 <= SR1_RANGE[1],
            f"well_formed_ok_{domain}": formed >= MIN_WELL_FORMED,
            f"feedback_below_retry_{domain}": (scores[f"solve_rate_after_feedback_{domain}"]
                                               < scores[f"solve_rate_after_retry_{domain}"])}


def calibrate(student, teacher, tasks, dialogue: settings.Dialogue, *, domain: str, seed: int, workers: int = 1,
              progress: bool = True) -> tuple[dict, object]:
    """Feedback dialogues of up to ``dialogue.eval_turns`` student turns on ``tasks`` (full variant), and as
    many independent one-turn tries of each (the retry comparator), side by side over ``workers`` processes
    (``sml.workers``). Returns the calibration keys of ``domain`` (rates with Wilson intervals, then
    ``criteria``) and the dialogues' transcripts."""
    turns = dialogue.eval_turns
    [cell] = evaluate_cells(student, teacher, {domain: Cell(tasks, "full", seed, retries=True)}, dialogue,
                            condition="base", train_domain="none", together=False, workers=workers,
                            progress=progress).values()
    data, retries = cell.data, cell.retries
    counts = dict(zip(transcripts.COUNTS, transcripts.dialogue_counts(data).sum(0)))
    retry_solves, later_tries = transcripts.retry_counts(retries).sum(0)
    first_turn = [fs[0] for fs in data["well_formed"] if fs]
    scores = {**rate(f"sr1_{domain}", sum(s == 1 for s in data["solved_turn"]), len(data)),
              **rate(f"well_formed_after_feedback_{domain}", *after_feedback(data)),
              **rate(f"well_formed_first_turn_{domain}", sum(first_turn), len(first_turn)),
              **rate(f"solve_rate_after_feedback_{domain}", int(counts["later_solves"]), int(counts["later_turns"])),
              **rate(f"solve_rate_after_retry_{domain}", int(retry_solves), int(later_tries)),
              f"sr{turns}_{domain}": sum(s > 0 for s in data["solved_turn"]) / len(data)}
    return {**scores, **criteria(scores, domain)}, data


def summary(scores: dict, domain: str) -> dict:
    """One domain's calibration as a table row: each rate with its interval, then the verdicts."""
    def shown(name):
        return f"{scores[name]:.3f} [{scores[name + '_low']:.3f}, {scores[name + '_high']:.3f}] (n {scores[name + '_n']})"
    return {"domain": domain, "SR@1": shown(f"sr1_{domain}"),
            "well-formed after feedback": shown(f"well_formed_after_feedback_{domain}"),
            "solve rate after feedback": shown(f"solve_rate_after_feedback_{domain}"),
            "solve rate after a fresh retry": shown(f"solve_rate_after_retry_{domain}"),
            **{k.removesuffix(f"_{domain}"): scores[k] for k in criteria(scores, domain)}}


def solved_by_kind(dialogues) -> dict[tuple, tuple[int, int]]:
    """First-turn solves by task kind, ``{(family, steps): (solved, dialogues)}`` from each task's metadata (toy
    code tasks: where in the task space a base fails)."""
    solved, seen = Counter(), Counter()
    for d in dialogues:
        meta = json.loads(d.task["metadata"])
        kind = (meta.get("family"), meta.get("steps"))
        seen[kind] += 1
        solved[kind] += d.solved_turn == 1
    return {kind: (solved[kind], seen[kind]) for kind in sorted(seen, key=str)}


# The toy code families by the argument their programs take (``toy_code``: def f(x) / f(xs) / f(s)).
FAMILY_OF_ARGUMENT = {"x": "int", "xs": "list", "s": "str"}
SIGNATURE = re.compile(r"def f\((\w+)\)")


def after_feedback_by_kind(dialogues) -> dict[str, dict]:
    """Student turns after feedback (turn >= 2) in toy code dialogues, as ``(well-formed, turns)`` counts by the
    task's family (``family``) and by student turn (``turn``), and how many turns write a program whose
    signature belongs to another family (``other_family``: ``(such turns, turns)`` by task family): where a base
    that holds its first turn loses the thread after feedback."""
    formed = {"family": Counter(), "turn": Counter()}
    seen = {"family": Counter(), "turn": Counter()}
    other, turns = Counter(), Counter()
    for d in dialogues:
        family = json.loads(d.task["metadata"]).get("family")
        replies = [m["content"] for m in d.messages if m["role"] == "assistant"]
        for turn, (ok, text) in enumerate(zip(d.well_formed, replies), 1):
            if turn == 1:
                continue
            for by, key in (("family", family), ("turn", turn)):
                formed[by][key] += ok
                seen[by][key] += 1
            signature = SIGNATURE.search(text)
            other[family] += bool(signature) and FAMILY_OF_ARGUMENT.get(signature.group(1)) != family
            turns[family] += 1
    order = {"family": str, "turn": int}
    counts = {by: {k: (formed[by][k], seen[by][k]) for k in sorted(seen[by], key=order[by])} for by in seen}
    return {**counts, "other_family": {k: (other[k], turns[k]) for k in sorted(turns, key=str)}}
