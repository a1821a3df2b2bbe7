"""Build the task sets: every source in our schema, split train/dev/eval by seed, saved as HF datasets.

``train`` is what training stages learn from, ``eval`` the held-out evaluation, and ``dev`` (trainable sources
only) a held-out part of the training pool for calibrating the base and tuning, so that no choice is ever
made on the evaluation split. The three are disjoint."""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from . import hub, toy_code, toy_math
from .humaneval import load_humaneval
from .schema import FEATURES, TaskError

TOY = ("toy_math", "toy_code")
EVAL_ONLY = ("humaneval", "livecodebench", "lost_in_conversation")  # benchmarks: never trained on
SOURCES = TOY + ("omni_math", "opencodeinstruct") + EVAL_ONLY


def check_params(p: dict) -> None:
    """Fail before any work, naming the offending ``tasks.*`` parameter."""
    unknown = [s for s in p["sources"] if s not in SOURCES]
    if not p["sources"] or unknown:
        raise TaskError(f"tasks.sources: unknown source(s) {unknown or p['sources']!r}; known: {list(SOURCES)}")
    for key in ("seed", "n_train", "n_dev", "n_eval"):
        if not isinstance(p[key], int) or isinstance(p[key], bool) or p[key] < 0:
            raise TaskError(f"tasks.{key}: must be a non-negative integer, got {p[key]!r}")
    if p["n_eval"] < 1:
        raise TaskError("tasks.n_eval: must be at least 1")
    if "toy_math" in p["sources"]:
        toy_math.check_difficulty(p["math_generator"], p["math_min_terms"], p["math_max_terms"],
                                  p["math_min_digits"], p["math_max_digits"])
    if "toy_code" in p["sources"]:
        toy_code.check_difficulty(p["code_families"], p["code_min_steps"], p["code_max_steps"], p["code_n_tests"])


def load_source(source: str, p: dict) -> list[dict]:
    n = p["n_train"] + p["n_dev"] + p["n_eval"]
    if source == "toy_math":
        return toy_math.generate(n, p["seed"], p["math_generator"], p["math_min_terms"], p["math_max_terms"],
                                 p["math_min_digits"], p["math_max_digits"])
    if source == "toy_code":
        return toy_code.generate(n, p["seed"], p["code_families"], p["code_min_steps"], p["code_max_steps"],
                                 p["code_n_tests"])
    if source == "humaneval":
        return load_humaneval()
    if p.get("hub_dir"):  # offline copies, one <source>.jsonl each
        return hub.LOADERS[source](str(Path(p["hub_dir"]) / f"{source}.jsonl"))
    return hub.LOADERS[source]()  # the loader's default hub id


def split(tasks: list[dict], source: str, p: dict) -> datasets.DatasetDict:
    """Seeded, deterministic, disjoint splits: train, dev (``n_dev``, carved from the training pool) and eval;
    benchmarks are evaluation-only."""
    data = datasets.Dataset.from_list(tasks, features=FEATURES).shuffle(seed=p["seed"])
    if source in EVAL_ONLY:
        return datasets.DatasetDict({"eval": data.select(range(min(p["n_eval"], len(data))))})
    if len(data) < p["n_eval"] + p["n_dev"] + 1:
        raise TaskError(f"tasks: source {source!r} has {len(data)} tasks, too few for n_eval={p['n_eval']} and "
                        f"n_dev={p['n_dev']} plus training")
    n_train = min(p["n_train"], len(data) - p["n_eval"] - p["n_dev"])
    bounds = {"train": (0, n_train), "eval": (n_train, n_train + p["n_eval"]),
              "dev": (n_train + p["n_eval"], n_train + p["n_eval"] + p["n_dev"])}
    parts = datasets.DatasetDict({name: data.select(range(*span)) for name, span in bounds.items()})
    prompts = {name: set(part["prompt"]) for name, part in parts.items()}
    for a, b in (("train", "eval"), ("train", "dev"), ("dev", "eval")):
        if overlap := prompts[a] & prompts[b]:
            raise TaskError(f"tasks: {len(overlap)} prompts of {source!r} are in both {a} and {b}")
    return parts


def build(p: dict, out_dir: str | Path, progress=lambda it, **kw: it) -> dict:
    """Build every source in ``p["sources"]`` into ``out_dir/<source>``; return counts per source/split."""
    check_params(p)
    out_dir = Path(out_dir)
    counts = {}
    for source in progress(p["sources"], desc="task sources"):
        parts = split(load_source(source, p), source, p)
        parts.save_to_disk(str(out_dir / source))
        counts[source] = {name: {"tasks": len(d), "with_shards": sum(1 for s in d["shards"] if s)}
                          for name, d in parts.items()}
    (out_dir / "counts.json").write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n")
    return counts


def load_tasks(out_dir: str | Path, source: str, split_name: str = "eval") -> datasets.Dataset:
    path = Path(out_dir) / source
    if not path.exists():
        raise TaskError(f"no task set {source!r} under {out_dir}: run the 'tasks' stage first (dvc repro tasks)")
    # In memory: transforms (shuffle, filter) of a dataset read from disk would write cache files into the
    # task folder, a DVC output, and so change it under every stage that reads it.
    return datasets.load_from_disk(str(path), keep_in_memory=True)[split_name]
