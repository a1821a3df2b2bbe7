"""Loaders for the paper's real datasets, all through ``datasets`` and mapped to our task schema.

Each ``load_*`` takes a local file (JSON/JSONL/Parquet, for offline use and the tests' fixtures) or a
hub id, and returns task dicts. A malformed record raises ``TaskError`` naming the record.

- Omni-MATH (``KbsdJames/Omni-MATH``): problem, answer, solution, domain, difficulty, source
- OpenCodeInstruct (``nvidia/OpenCodeInstruct``): id, input, output, unit_tests (a JSON list of asserts)
- LiveCodeBench (``livecodebench/code_generation_lite``): question_*, starter_code, public/private
  test cases (JSON, or the upstream base64+zlib+pickle encoding), metadata with ``func_name``
- Lost in Conversation (``microsoft/lost_in_conversation``): task_id, task, shards [{shard_id, shard}],
  math: answer (GSM8K style ``#### 16`` allowed); code: prompt, test (HumanEval ``check``), entry point
"""

from __future__ import annotations

import base64
import builtins
import json
import pickle
import re
import zlib
from pathlib import Path
from typing import Callable, Iterable

import datasets

from .humaneval import code_prompt, tests_from_check
from .schema import TaskError, make_task

_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def read_records(path_or_id: str, split: str = "train", name: str | None = None) -> datasets.Dataset:
    """A local data file (offline) or a hub dataset id (needs the network) as a ``datasets.Dataset``."""
    path = Path(path_or_id)
    if path.exists():
        suffix = "".join(path.suffixes[-2:]).replace(".gz", "") if path.suffix == ".gz" else path.suffix
        if suffix not in _FORMATS:
            raise TaskError(f"{path}: unsupported file type {suffix!r}; use one of {sorted(_FORMATS)}")
        return datasets.load_dataset(_FORMATS[suffix], data_files=str(path), split="train")
    return datasets.load_dataset(path_or_id, name, split=split)


def _require(record: dict, keys: Iterable[str], where: str) -> None:
    missing = [k for k in keys if record.get(k) in (None, "")]
    if missing:
        raise TaskError(f"{where}: missing or empty field(s) {missing}")


def _map(records: Iterable[dict], source: str, convert: Callable[[dict, str], dict | None]) -> list[dict]:
    tasks = []
    for index, record in enumerate(records):
        where = f"{source} record {index} (id {record.get('id') or record.get('task_id') or record.get('question_id')!r})"
        try:
            task = convert(record, where)
        except (KeyError, TypeError, ValueError, SyntaxError) as exc:
            if isinstance(exc, TaskError):
                raise
            raise TaskError(f"{where}: malformed: {type(exc).__name__}: {exc}") from exc
        if task is not None:
            tasks.append(task)
    return tasks


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def _gsm8k_answer(text: str) -> str:
    return text.split("####")[-1].strip().replace(",", "") if "####" in text else text.strip()


def load_omni_math(path_or_id: str = "KbsdJames/Omni-MATH", split: str = "test") -> list[dict]:
    def convert(r: dict, where: str) -> dict:
        _require(r, ["problem", "answer"], where)
        index = r.get("id", where.split()[2])
        return make_task(id=f"omni_math/{index}", domain="math", source="omni_math", prompt=r["problem"],
                         answer=str(r["answer"]), solution=r.get("solution") or "",
                         metadata={k: r.get(k) for k in ("domain", "difficulty", "source")})
    return _map(read_records(path_or_id, split), "omni_math", convert)


def _entry_point_from_tests(tests: list[str]) -> str | None:
    for test in tests:
        for name in re.findall(r"([A-Za-z_]\w*)\s*\(", test):
            if name not in _BUILTINS and name != "assert":
                return name
    return None


_BUILTINS = set(dir(builtins))


def load_opencodeinstruct(path_or_id: str = "nvidia/OpenCodeInstruct", split: str = "train") -> list[dict]:
    from ..verify.code import extract_code

    def convert(r: dict, where: str) -> dict:
        _require(r, ["id", "input", "unit_tests"], where)
        try:
            tests = _json(r["unit_tests"])
        except json.JSONDecodeError as exc:
            raise TaskError(f"{where}: 'unit_tests' is not valid JSON: {exc}") from exc
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests) or not tests:
            raise TaskError(f"{where}: 'unit_tests' must be a non-empty JSON list of assert strings")
        entry = _entry_point_from_tests(tests)
        if entry is None:
            raise TaskError(f"{where}: cannot tell which function the unit tests call")
        return make_task(id=f"opencodeinstruct/{r['id']}", domain="code", source="opencodeinstruct",
                         prompt=r["input"], solution=extract_code(r.get("output") or ""), entry_point=entry,
                         tests=tests, metadata={"domain": r.get("domain"),
                                                "average_test_score": r.get("average_test_score")})
    return _map(read_records(path_or_id, split), "opencodeinstruct", convert)


def _lcb_cases(value, field: str, where: str) -> list[dict]:
    """LiveCodeBench test cases: plain JSON, or upstream's base64(zlib(pickle(json string)))."""
    if isinstance(value, list):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:  # upstream's own encoding of private tests; only ever applied to the dataset's files
        return json.loads(pickle.loads(zlib.decompress(base64.b64decode(value.encode()))))
    except (ValueError, TypeError, zlib.error, pickle.UnpicklingError, EOFError) as exc:
        raise TaskError(f"{where}: {field!r} is neither JSON nor the upstream encoding: {exc}") from exc


_STDIN_SETUP = '''import io, sys, contextlib
def _run_stdin(text):
    out = io.StringIO()
    old = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(text.encode()))  # has .buffer, as contest code expects
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(__candidate_source__, "<candidate>", "exec"), {"__name__": "__main__"})
    except SystemExit:
        pass  # exit() after printing the answer is fine
    finally:
        sys.stdin = old
    return out.getvalue()
'''


def livecodebench_tests(cases: list[dict], func_name: str | None, where: str) -> tuple[str, str, list[str]]:
    """(entry_point, setup, tests) for LiveCodeBench cases: functional (LeetCode ``class Solution``) or stdin."""
    tests = []
    for case in cases:
        if case.get("testtype") == "functional":
            if not func_name:
                raise TaskError(f"{where}: functional tests need metadata.func_name")
            args = ", ".join(repr(json.loads(line)) for line in case["input"].splitlines() if line.strip())
            tests.append(f"assert Solution().{func_name}({args}) == {json.loads(case['output'])!r}")
        elif case.get("testtype") == "stdin":
            tests.append(f"assert _run_stdin({case['input']!r}).split() == {case['output']!r}.split()")
        else:
            raise TaskError(f"{where}: unknown testtype {case.get('testtype')!r}")
    if not tests:
        raise TaskError(f"{where}: no test cases")
    stdin = all(c.get("testtype") == "stdin" for c in cases)
    return ("__main__", _STDIN_SETUP, tests) if stdin else ("Solution", "", tests)


def load_livecodebench(path_or_id: str = "livecodebench/code_generation_lite", split: str = "test") -> list[dict]:
    def convert(r: dict, where: str) -> dict:
        _require(r, ["question_id", "question_content", "public_test_cases"], where)
        meta = _json(r.get("metadata") or "{}")
        cases = _lcb_cases(r["public_test_cases"], "public_test_cases", where)
        if r.get("private_test_cases"):
            cases += _lcb_cases(r["private_test_cases"], "private_test_cases", where)
        entry, setup, tests = livecodebench_tests(cases, meta.get("func_name"), where)
        prompt = r["question_content"]
        if r.get("starter_code"):
            prompt += f"\n\nStart from:\n```python\n{r['starter_code'].rstrip()}\n```"
        return make_task(id=f"livecodebench/{r['question_id']}", domain="code", source="livecodebench",
                         prompt=prompt, entry_point=entry, test_setup=setup, tests=tests,
                         metadata={k: r.get(k) for k in ("question_title", "platform", "contest_date", "difficulty")})
    return _map(read_records(path_or_id, split), "livecodebench", convert)


def load_lost_in_conversation(path_or_id: str = "microsoft/lost_in_conversation", split: str = "train",
                              domains: tuple[str, ...] = ("math", "code")) -> list[dict]:
    """The sharded math and code tasks (other LiC tasks, e.g. ``database``, are skipped)."""
    def convert(r: dict, where: str) -> dict | None:
        _require(r, ["task_id", "task", "shards"], where)
        if r["task"] not in domains:
            return None
        ordered = sorted(_json(r["shards"]), key=lambda s: int(s["shard_id"]))
        shards = [s["shard"] for s in ordered]
        if len(shards) < 2:
            raise TaskError(f"{where}: needs at least 2 shards, got {len(shards)}")
        meta = _json(r.get("metadata") or {}) or {}
        common = dict(id=f"lic/{r['task_id']}", domain=r["task"], source=f"lic_{r['task']}", shards=shards,
                      metadata={"task_id": r["task_id"], **meta})
        if r["task"] == "math":
            _require(r, ["answer"], where)
            return make_task(**common, prompt=r.get("question") or " ".join(shards),
                             answer=_gsm8k_answer(str(r["answer"])), solution=str(r["answer"]))
        _require(r, ["test"], where)
        entry = r.get("entry_point") or meta.get("func_name")
        if not entry:
            raise TaskError(f"{where}: a code task needs 'entry_point' or metadata.func_name")
        setup, tests = tests_from_check(r["test"], entry, where)
        prompt = code_prompt(r["prompt"], entry) if r.get("prompt") else " ".join(shards)
        return make_task(**common, prompt=prompt, entry_point=entry, test_setup=setup, tests=tests)
    return _map(read_records(path_or_id, split), "lost_in_conversation", convert)


LOADERS = {"omni_math": load_omni_math, "opencodeinstruct": load_opencodeinstruct,
           "livecodebench": load_livecodebench, "lost_in_conversation": load_lost_in_conversation}
