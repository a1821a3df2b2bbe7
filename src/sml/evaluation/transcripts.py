"""Transcripts as Hugging Face datasets, and the metrics computed from them.

One record per dialogue: the messages (teacher = ``user``, student = ``assistant``), per student turn
its label (attempt/question/other), whether it was correct, whether it was a premature attempt, how
many shards had been revealed, whether Q-priming put a question in its place, whether it was well formed
and whether it fixed the error the teacher had just named; per teacher reply whether the leak audit
flagged it and the concrete error it named ("" when none); and the outcome (``solved_turn``, ``reward`` =
gamma^(t-1) on success). ``sml.dialogue.environment`` defines each of these facts.
"""

from __future__ import annotations

import math
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "task_id": datasets.Value("string"),
    "domain": datasets.Value("string"),
    "source": datasets.Value("string"),
    "variant": datasets.Value("string"),
    "sample": datasets.Value("int32"),
    "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
    "labels": datasets.List(datasets.Value("string")),
    "correct": datasets.List(datasets.Value("bool")),
    "premature": datasets.List(datasets.Value("bool")),
    "revealed": datasets.List(datasets.Value("int32")),
    "leaks": datasets.List(datasets.Value("bool")),
    "injected": datasets.List(datasets.Value("string")),
    "well_formed": datasets.List(datasets.Value("bool")),
    "fixed": datasets.List(datasets.Value("bool")),
    "named": datasets.List(datasets.Value("string")),
    "n_shards": datasets.Value("int32"),
    "turns": datasets.Value("int32"),
    "solved_turn": datasets.Value("int32"),
    "stop": datasets.Value("string"),
    "reward": datasets.Value("float32"),
})


def record(d, gamma: float) -> dict:
    """A finished ``environment.Dialogue`` as a transcript record."""
    return {"id": f"{d.task['id']}#{d.sample}", "task_id": d.task["id"], "domain": d.task["domain"],
            "source": d.task["source"], "variant": d.variant, "sample": d.sample, "messages": d.messages,
            "labels": d.labels, "correct": d.correct, "premature": d.premature, "revealed": d.revealed,
            "leaks": d.leaks, "injected": d.injected, "well_formed": d.well_formed, "fixed": d.fixed,
            "named": d.named, "n_shards": d.n_shards, "turns": d.turns, "solved_turn": d.solved_turn,
            "stop": d.stop, "reward": d.reward(gamma)}


def to_dataset(dialogues, gamma: float) -> datasets.Dataset:
    return datasets.Dataset.from_list([record(d, gamma) for d in dialogues], features=FEATURES)


def save(transcripts: datasets.Dataset, path: str | Path) -> None:
    transcripts.save_to_disk(str(path))


def load(path: str | Path) -> datasets.Dataset:
    if not Path(path).exists():
        raise FileNotFoundError(f"no transcripts at {path}")
    return datasets.load_from_disk(str(path), keep_in_memory=True)  # no cache files written into a DVC output


# --- metrics --------------------------------------------------------------------------------------------

def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (never zero-width at 0% or 100%)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def success_at(transcripts, max_turns: int) -> pd.DataFrame:
    """SR@k for k = 1..max_turns: the fraction of dialogues solved within k student turns (cumulative),
    with ``n`` dialogues and a Wilson 95% interval."""
    solved = pd.Series(list(transcripts["solved_turn"]), dtype="int64")
    n = len(solved)
    rows = []
    for k in range(1, max_turns + 1):
        hits = int(((solved >= 1) & (solved <= k)).sum())
        low, high = wilson(hits, n)
        rows.append({"turn": k, "success": hits / n if n else float("nan"), "n": n, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def behaviour(transcripts) -> dict:
    """Premature-attempt rate (over attempts), question rate (over student turns), mean turns to solve
    (over solved dialogues) and leak rate (over teacher replies)."""
    labels = [l for ls in transcripts["labels"] for l in ls]
    premature = [p for ps in transcripts["premature"] for p in ps]
    attempts = sum(l == "attempt" for l in labels)
    leaks = [x for xs in transcripts["leaks"] for x in xs]
    solved = [t for t in transcripts["solved_turn"] if t]
    return {"premature_rate": sum(premature) / attempts if attempts else 0.0,
            "question_rate": sum(l == "question" for l in labels) / len(labels) if labels else 0.0,
            "mean_turns_to_solve": sum(solved) / len(solved) if solved else float("nan"),
            "leak_rate": sum(leaks) / len(leaks) if leaks else 0.0}


def hazard(solved_turns, turns) -> tuple[int, int]:
    """The chance of solving at a turn >= 2 given no earlier success, as counts: ``(solves at turns >= 2,
    turns >= 2 taken before any success)`` over dialogues that solved at ``solved_turns`` (0: never) after
    taking ``turns`` turns."""
    solves = sum(s >= 2 for s in solved_turns)
    taken = sum(max(t - 1, 0) for s, t in zip(solved_turns, turns) if s != 1)
    return solves, taken


# per dialogue, the counts the pooled rates rest on
COUNTS = ("attempts", "premature", "questions", "turns", "well_formed", "named_errors", "fixed", "later_solves",
          "later_turns")


def dialogue_counts(data) -> np.ndarray:
    """One row of ``COUNTS`` per dialogue of ``data``. ``named_errors``: attempts right after a teacher reply
    that named a concrete error; ``fixed``: those that fixed it; ``later_*``: see ``hazard``."""
    rows = []
    for labels, premature, formed, named, fixed, solved in zip(data["labels"], data["premature"], data["well_formed"],
                                                                data["named"], data["fixed"], data["solved_turn"]):
        followed = [t for t in range(1, len(labels)) if named[t - 1] and labels[t] == "attempt"]
        rows.append((sum(l == "attempt" for l in labels), sum(premature), sum(l == "question" for l in labels),
                     len(labels), sum(formed), len(followed), sum(fixed[t] for t in followed),
                     *hazard([solved], [len(labels)])))
    return np.array(rows, dtype=float).reshape(-1, len(COUNTS))


def first_successes(retries) -> tuple[list[int], list[int]]:
    """Independent single-turn tries (dialogues of one turn, several samples per task) read as if each
    task's tries, in sample order, were the turns of one dialogue: per task the first try that solved it
    (1-based; 0: none) and the tries taken until then (all of them when none did)."""
    tries: dict[str, dict[int, bool]] = {}
    for task, sample, solved in zip(retries["task_id"], retries["sample"], retries["solved_turn"]):
        tries.setdefault(task, {})[sample] = bool(solved)
    ordered = [[s[i] for i in sorted(s)] for s in tries.values()]
    first = [o.index(True) + 1 if any(o) else 0 for o in ordered]
    return first, [f or len(o) for f, o in zip(first, ordered)]


def retry_counts(retries) -> np.ndarray:
    """Per task of ``retries``: ``RETRY_COUNTS``, the solves at tries >= 2 and the tries >= 2 taken before any
    success (``hazard``)."""
    return np.array([hazard([f], [t]) for f, t in zip(*first_successes(retries))], dtype=float).reshape(-1, 2)


def _rate(num: float, den: float) -> float:
    return float(num / den) if den else 0.0  # no NaN in the contract: an empty rate is 0, its count says so


# pooled rate -> (its short name in the interval columns, numerator, denominator among COUNTS)
POOLED = {"premature_rate": ("premature", "premature", "attempts"),
          "question_rate": ("question", "questions", "turns"),
          "well_formed_rate": ("well_formed", "well_formed", "turns"),
          "feedback_uptake_rate": ("feedback_uptake", "fixed", "named_errors"),
          "solve_rate_after_feedback": ("solve_after_feedback", "later_solves", "later_turns")}
RETRY = {"solve_rate_after_retry": ("solve_after_retry", "retry_solves", "later_tries")}  # over retry_counts
RETRY_COUNTS = ("retry_solves", "later_tries")


def feedback_use(data, retries=None) -> dict:
    """How a student uses feedback: well-formed turns (over student turns), uptake (attempts that fix the
    concrete error the teacher just named, over such attempts), the chance of solving at a turn >= 2 given
    no earlier success, and the same chance over ``retries`` (independent single-turn tries of the same
    tasks, ``retry``; 0 without them). A student learns from feedback when the third beats the fourth."""
    c = dict(zip(COUNTS, dialogue_counts(data).sum(0)))
    retry = retry_counts(retries).sum(0) if retries is not None else (0, 0)
    return {"well_formed_rate": _rate(c["well_formed"], c["turns"]),
            "feedback_uptake_rate": _rate(c["fixed"], c["named_errors"]),
            "solve_rate_after_feedback": _rate(c["later_solves"], c["later_turns"]),
            "solve_rate_after_retry": _rate(*retry)}


def _bootstrap(counts: np.ndarray, num: int, den: int, picks: np.ndarray) -> tuple[float, float, float]:
    """The pooled rate ``sum(num) / sum(den)`` over the rows of ``counts``, and its 95% bootstrap interval
    over ``picks`` (resampled row indices); ``[0, 1]`` when nothing was counted."""
    total = counts[:, den].sum()
    if not total:
        return 0.0, 0.0, 1.0
    num_b, den_b = counts[picks, num].sum(1), counts[picks, den].sum(1)
    rates = np.divide(num_b, den_b, out=np.zeros_like(num_b), where=den_b > 0)
    low, high = np.quantile(rates, [0.025, 0.975])
    return float(counts[:, num].sum() / total), float(low), float(high)


def behaviour_intervals(cells, retries=(), n_boot: int = 2000, seed: int = 0) -> dict:
    """The rates of ``POOLED`` over the dialogues of ``cells`` (transcript datasets, e.g. one per seed)
    pooled, each with a 95% bootstrap interval that resamples whole dialogues (a dialogue's turns are not
    independent of each other); the retry rate over ``retries`` (their retry runs), resampling tasks.
    Also the counts they rest on."""
    counts = np.concatenate([dialogue_counts(data) for data in cells])
    retry = np.concatenate([retry_counts(data) for data in retries] or [np.zeros((0, 2))])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(counts), size=(n_boot, len(counts)))
    out = {"dialogues": len(counts), "retry_tasks": len(retry), "later_tries": int(retry[:, 1].sum()),
           **{name: int(counts[:, COUNTS.index(name)].sum()) for name in ("attempts", "turns", "named_errors",
                                                                            "later_turns")}}
    for rate, (short, num, den) in POOLED.items():
        out[rate], out[f"{short}_low"], out[f"{short}_high"] = _bootstrap(counts, COUNTS.index(num), COUNTS.index(den),
                                                                          picks)
    picks = rng.integers(0, len(retry), size=(n_boot, len(retry)))
    for rate, (short, num, den) in RETRY.items():
        out[rate], out[f"{short}_low"], out[f"{short}_high"] = _bootstrap(
            retry, RETRY_COUNTS.index(num), RETRY_COUNTS.index(den), picks)
    return out


EVAL_COLUMNS = ["condition", "train_domain", "eval_domain", "variant", "seed", "turn", "success", "n"]
INTERVAL_COLUMNS = ["condition", "train_domain", "eval_domain", "variant", "dialogues", "attempts", "turns",
                    "premature_rate", "premature_low", "premature_high", "question_rate", "question_low",
                    "question_high", "named_errors", "later_turns", "retry_tasks", "later_tries",
                    "well_formed_rate", "well_formed_low", "well_formed_high", "feedback_uptake_rate",
                    "feedback_uptake_low", "feedback_uptake_high", "solve_rate_after_feedback",
                    "solve_after_feedback_low", "solve_after_feedback_high", "solve_rate_after_retry",
                    "solve_after_retry_low", "solve_after_retry_high"]
BEHAVIOUR_COLUMNS = ["condition", "train_domain", "eval_domain", "variant", "seed", "premature_rate",
                     "question_rate", "mean_turns_to_solve", "leak_rate", "well_formed_rate", "feedback_uptake_rate",
                     "solve_rate_after_feedback", "solve_rate_after_retry"]
KEYS = ["condition", "train_domain", "eval_domain", "variant", "seed"]


def write_csv(path: str | Path, rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Write ``rows`` (sorted by their keys) to ``path`` atomically: a crash never leaves half a file."""
    path = Path(path)
    rows = rows[columns].sort_values([c for c in columns if c in KEYS + ["turn"]], kind="stable").reset_index(drop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    rows.to_csv(tmp, index=False)
    tmp.replace(path)
    return rows
