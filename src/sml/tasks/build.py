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
from sml import settings
from sml.settings import as_list

TOY = ("toy_math", "toy_code")
EVAL_ONLY = ("humaneval", "livecodebench", "lost_in_conversation")  # benchmarks: never trained on


def toy_tasks(source: str, n: int, seed: int, tasks: settings.Tasks, code_max_steps: int | None = None,
              math_max_terms: int | None = None) -> list[dict]:
    """``n`` tasks of a toy source at the difficulty ``tasks`` (params.yaml's section) sets; code pipelines run
    up to ``code_max_steps`` steps where that is more than ``tasks.code_max_steps``, and expressions up to
    ``math_max_terms`` terms where that is more than ``tasks.math_max_terms``."""
    if source == "toy_math":
        return toy_math.generate(n, seed, tasks.math_generator, tasks.math_min_terms,
                                 max(math_max_terms or 0, tasks.math_max_terms), tasks.math_min_digits,
                                 tasks.math_max_digits)
    return toy_code.generate(n, seed, tuple(as_list(tasks.code_families)), tasks.code_min_steps,
                             max(code_max_steps or 0, tasks.code_max_steps), tasks.code_n_tests, tasks.code_worked,
                             tasks.code_max_constant)


def load_source(source: str, tasks: settings.Tasks) -> list[dict]:
    if source in TOY:
        return toy_tasks(source, tasks.n_train + tasks.n_dev + tasks.n_eval, tasks.seed, tasks)
    if source == "humaneval":
        return load_humaneval()
    if tasks.hub_dir:  # offline copies, one <source>.jsonl each
        return hub.LOADERS[source](str(Path(tasks.hub_dir) / f"{source}.jsonl"))
    return hub.LOADERS[source]()  # the loader's default hub id


def split(records: list[dict], source: str, tasks: settings.Tasks) -> datasets.DatasetDict:
    """Seeded, deterministic, disjoint splits: train, dev (``n_dev``, carved from the training pool) and eval;
    benchmarks are evaluation-only."""
    data = datasets.Dataset.from_list(records, features=FEATURES).shuffle(seed=tasks.seed)
    if source in EVAL_ONLY:
        return datasets.DatasetDict({"eval": data.select(range(min(tasks.n_eval, len(data))))})
    if len(data) < tasks.n_eval + tasks.n_dev + 1:
        raise TaskError(f"tasks: source {source!r} has {len(data)} tasks, too few for n_eval={tasks.n_eval} and "
                        f"n_dev={tasks.n_dev} plus training")
    n_train = min(tasks.n_train, len(data) - tasks.n_eval - tasks.n_dev)
    bounds = {"train": (0, n_train), "eval": (n_train, n_train + tasks.n_eval),
              "dev": (n_train + tasks.n_eval, n_train + tasks.n_eval + tasks.n_dev)}
    parts = datasets.DatasetDict({name: data.select(range(*span)) for name, span in bounds.items()})
    prompts = {name: set(part["prompt"]) for name, part in parts.items()}
    for a, b in (("train", "eval"), ("train", "dev"), ("dev", "eval")):
        if overlap := prompts[a] & prompts[b]:
            raise TaskError(f"tasks: {len(overlap)} prompts of {source!r} are in both {a} and {b}")
    return parts


def build(tasks: settings.Tasks, out_dir: str | Path, progress=lambda it, **kw: it) -> dict:
    """Build every source in ``tasks.sources`` into ``out_dir/<source>``; return counts per source/split."""
    out_dir = Path(out_dir)
    counts = {}
    for source in progress(as_list(tasks.sources), desc="task sources"):
        parts = split(load_source(source, tasks), source, tasks)
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
