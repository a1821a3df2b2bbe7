"""One record schema for every task source (toy, HumanEval, hub datasets).

A task is a plain dict with these fields, stored as a Hugging Face dataset:

- ``id``: unique, stable across runs (e.g. ``toy_math/17``, ``HumanEval/0``)
- ``domain``: ``math`` or ``code``
- ``source``: where it came from (``toy_math``, ``toy_code``, ``humaneval``, ``omni_math`` ...)
- ``prompt``: the fully specified problem as the teacher states it
- ``answer``: math: the final answer (private); code: empty
- ``solution``: a reference solution (code) or worked solution (math), private, may be empty
- ``entry_point``: code: the function the tests call; math: empty
- ``test_setup``: code run before the tests (imports, helpers); may be empty
- ``tests``: hidden unit tests, each a Python snippet ending in an assert (code only)
- ``shards``: the underspecified variant: ``shards[0]`` states the intent, each later shard one
  needed detail (after "Lost in Conversation"); empty when the source has none
- ``metadata``: a JSON string with whatever else the source knows (difficulty, original ids ...)
"""

from __future__ import annotations

import json

import datasets

from sml.settings import DOMAINS, VARIANTS


FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "domain": datasets.Value("string"),
    "source": datasets.Value("string"),
    "prompt": datasets.Value("string"),
    "answer": datasets.Value("string"),
    "solution": datasets.Value("string"),
    "entry_point": datasets.Value("string"),
    "test_setup": datasets.Value("string"),
    "tests": datasets.Sequence(datasets.Value("string")),
    "shards": datasets.Sequence(datasets.Value("string")),
    "metadata": datasets.Value("string"),
})


class TaskError(ValueError):
    """A task record (or the parameters that build one) is malformed; the message names which."""


def make_task(*, id: str, domain: str, source: str, prompt: str, answer: str = "", solution: str = "",
              entry_point: str = "", test_setup: str = "", tests: list[str] | None = None,
              shards: list[str] | None = None, metadata: dict | None = None) -> dict:
    """Build a task record and check it against the schema."""
    task = {"id": id, "domain": domain, "source": source, "prompt": prompt, "answer": str(answer),
            "solution": solution, "entry_point": entry_point, "test_setup": test_setup,
            "tests": list(tests or []), "shards": list(shards or []),
            "metadata": json.dumps(metadata or {}, sort_keys=True, default=str)}
    validate_task(task)
    return task


def validate_task(task: dict) -> None:
    """Raise ``TaskError`` naming the record and field when ``task`` breaks the schema."""
    name = task.get("id") or "<record without id>"
    missing = [k for k in FEATURES if k not in task]
    if missing:
        raise TaskError(f"task {name!r}: missing fields {missing}")
    if not task["id"] or not isinstance(task["id"], str):
        raise TaskError(f"task {name!r}: 'id' must be a non-empty string")
    if task["domain"] not in DOMAINS:
        raise TaskError(f"task {name!r}: domain {task['domain']!r} is not one of {DOMAINS}")
    if not task["prompt"].strip():
        raise TaskError(f"task {name!r}: empty 'prompt'")
    if task["domain"] == "math" and not task["answer"].strip():
        raise TaskError(f"task {name!r}: a math task needs an 'answer'")
    if task["domain"] == "code" and not task["tests"]:
        raise TaskError(f"task {name!r}: a code task needs hidden 'tests'")
    if task["domain"] == "code" and not task["entry_point"]:
        raise TaskError(f"task {name!r}: a code task needs an 'entry_point'")
    if len(task["shards"]) == 1:
        raise TaskError(f"task {name!r}: 'shards' needs an intent plus at least one detail, got 1 shard")


def metadata(task: dict) -> dict:
    return json.loads(task["metadata"])


def prompt_for(task: dict, variant: str) -> str:
    """What the teacher says first: the whole problem (``full``) or just the intent (``sharded``)."""
    if variant == "full":
        return task["prompt"]
    if variant == "sharded":
        if not task["shards"]:
            raise TaskError(f"task {task['id']!r} has no shards, so it has no 'sharded' variant")
        return task["shards"][0]
    raise TaskError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
