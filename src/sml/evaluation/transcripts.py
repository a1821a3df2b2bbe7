"""Transcripts as Hugging Face datasets, and the metrics computed from them.

One record per dialogue: the messages (teacher = ``user``, student = ``assistant``), per student turn
its label (attempt/question/other), whether it was correct, whether it was a premature attempt, how
many shards had been revealed and whether Q-priming put a question in its place; per teacher reply whether the leak audit flagged it; and the outcome
(``solved_turn``, ``reward`` = gamma^(t-1) on success).
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
            "leaks": d.leaks, "injected": d.injected, "n_shards": d.n_shards, "turns": d.turns, "solved_turn": d.solved_turn,
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


def behaviour_intervals(cells, n_boot: int = 2000, seed: int = 0) -> dict:
    """Premature and question rates of the dialogues of ``cells`` (transcript datasets, e.g. one per seed)
    pooled, each with a 95% bootstrap interval that resamples whole dialogues (a dialogue's turns are not
    independent of each other). Also the counts they rest on."""
    counts = np.array([(sum(l == "attempt" for l in labels), sum(premature), sum(l == "question" for l in labels),
                        len(labels)) for data in cells for labels, premature in zip(data["labels"], data["premature"])],
                      dtype=float).reshape(-1, 4)
    picks = np.random.default_rng(seed).integers(0, len(counts), size=(n_boot, len(counts)))
    out = {"dialogues": len(counts), "attempts": int(counts[:, 0].sum()), "turns": int(counts[:, 3].sum())}
    for name, num, den in (("premature", 1, 0), ("question", 2, 3)):
        total = counts[:, den].sum()
        out[f"{name}_rate"] = float(counts[:, num].sum() / total) if total else 0.0
        num_b, den_b = counts[picks, num].sum(1), counts[picks, den].sum(1)
        rates = np.divide(num_b, den_b, out=np.zeros_like(num_b), where=den_b > 0)
        out[f"{name}_low"], out[f"{name}_high"] = (float(q) for q in np.quantile(rates, [0.025, 0.975]))
    return out


EVAL_COLUMNS = ["condition", "train_domain", "eval_domain", "variant", "seed", "turn", "success", "n"]
INTERVAL_COLUMNS = ["condition", "train_domain", "eval_domain", "variant", "dialogues", "attempts", "turns",
                    "premature_rate", "premature_low", "premature_high", "question_rate", "question_low",
                    "question_high"]
BEHAVIOUR_COLUMNS = ["condition", "train_domain", "eval_domain", "variant", "seed", "premature_rate",
                     "question_rate", "mean_turns_to_solve", "leak_rate"]
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
