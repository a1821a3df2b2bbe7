"""Gather every stage's evaluation rows into the contract files.

Each evaluating stage writes its own parts (``metrics/parts/eval/<name>.csv`` and
``metrics/parts/behaviour/<name>.csv``), so stages never share an output; this step concatenates them
into ``metrics/eval.csv`` and ``metrics/behaviour.csv`` and summarises SR@1/4/10 per condition and
domain pair in ``metrics/summary.json`` (mean over seeds, with a 95% Wilson interval over all
evaluation dialogues of the seeds pooled), with each cell's behaviour rates (premature, question,
well-formed, feedback uptake, solving after feedback and after retries), pooled over the seeds from their
counts, and their bootstrap intervals (``metrics/parts/intervals/<name>.csv``) beside them.

Run: ``PYTHONPATH=src python -m sml.evaluation.collect [--root .]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from sml.evaluation.transcripts import (BEHAVIOUR_COLUMNS, EVAL_COLUMNS, INTERVAL_COLUMNS, KEYS, POOLED, RETRY, wilson,
                                        write_csv)

SUMMARY_TURNS = (1, 4, 10)


def read_parts(folder: Path, columns: list[str]) -> pd.DataFrame:
    parts = sorted(folder.glob("*.csv"))
    if not parts:
        raise FileNotFoundError(f"no metric parts in {folder}: run the evaluating stages first")
    frames = []
    for path in parts:
        frame = pd.read_csv(path)
        if list(frame.columns) != columns:
            raise ValueError(f"{path}: columns {list(frame.columns)} are not the contract's {columns}")
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    duplicated = rows.duplicated(subset=[c for c in columns if c in KEYS + ["turn"]])
    if duplicated.any():
        raise ValueError(f"{folder}: two parts hold the same cell, e.g. {rows[duplicated].iloc[0][KEYS].to_dict()}")
    return rows


def pooled(rows: pd.DataFrame) -> pd.DataFrame:
    """Per turn, SR@turn averaged over the seeds of ``rows`` (one cell) and a 95% Wilson interval over
    all their evaluation dialogues pooled: columns ``turn, success, ci_low, ci_high, n``."""
    out = []
    for turn, at in rows.groupby("turn"):
        n = int(at["n"].sum())
        low, high = wilson(float((at["success"] * at["n"]).sum()), n)
        out.append({"turn": int(turn), "success": float(at["success"].mean()), "ci_low": low, "ci_high": high, "n": n})
    return pd.DataFrame(out)


def summary(rows: pd.DataFrame, turns=SUMMARY_TURNS) -> dict:
    """``{condition: {"<train>-><eval> <variant>": {"sr1": .., "sr1_ci": [lo, hi], ..., "n": .., "seeds": ..}}}``."""
    out: dict = {}
    cells = rows.groupby(["condition", "train_domain", "eval_domain", "variant"])
    for (condition, train, evaluated, variant), cell in cells:
        curve = pooled(cell).set_index("turn")
        entry = {}
        for k in (k for k in turns if k in curve.index):
            entry[f"sr{k}"] = round(curve.loc[k, "success"], 4)
            entry[f"sr{k}_ci"] = [round(curve.loc[k, "ci_low"], 4), round(curve.loc[k, "ci_high"], 4)]
        entry["n"] = int(curve.loc[1, "n"])
        entry["seeds"] = int(cell["seed"].nunique())
        out.setdefault(condition, {})[f"{train}->{evaluated} {variant}"] = entry
    return out


def add_behaviour(result: dict, intervals: pd.DataFrame) -> dict:
    """Put each cell's pooled behaviour rates, with their 95% bootstrap intervals, next to its success rates
    in the summary (``premature_rate``, ``premature_rate_ci``, ``question_rate``, ...), and the counts they
    rest on. A rate with nothing to count (no retry run for a sharded cell, no named error) is left out."""
    for row in intervals.itertuples():
        entry = result.get(row.condition, {}).get(f"{row.train_domain}->{row.eval_domain} {row.variant}")
        if entry is None:
            continue
        for rate, (short, _, den) in {**POOLED, **RETRY}.items():
            if getattr(row, den):
                entry[rate] = round(getattr(row, rate), 4)
                entry[f"{rate}_ci"] = [round(getattr(row, f"{short}_low"), 4), round(getattr(row, f"{short}_high"), 4)]
        for count in ("attempts", "named_errors", "later_turns", "later_tries"):
            entry[count] = int(getattr(row, count))
    return result


def collect(root: str | Path = ".") -> dict:
    """Write the contract files under ``root/metrics`` from the parts; return the summary."""
    metrics = Path(root) / "metrics"
    evals = read_parts(metrics / "parts" / "eval", EVAL_COLUMNS)
    behaviour = read_parts(metrics / "parts" / "behaviour", BEHAVIOUR_COLUMNS)
    write_csv(metrics / "eval.csv", evals, EVAL_COLUMNS)
    write_csv(metrics / "behaviour.csv", behaviour, BEHAVIOUR_COLUMNS)
    result = summary(evals)
    if (metrics / "parts" / "intervals").exists():
        add_behaviour(result, read_parts(metrics / "parts" / "intervals", INTERVAL_COLUMNS))
    (metrics / "summary.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="folder holding metrics/parts (default: the repository root)")
    result = collect(parser.parse_args().root)
    print(json.dumps(result, indent=2, sort_keys=True))
