"""Every setting of the pipeline, declared once: one typed section per ``params.yaml`` section.

The values live only in ``params.yaml`` (or a profile laid over it, ``profiles/*.yaml``); this module only
says what each value may be. Checking a file reports every problem at once, one line each, starting with
the key it is about, with a "did you mean" for typos, before any model loads::

    cfg = load("params.yaml")            # or a profile, e.g. load("profiles/smoke.yaml")
    cfg.online_sml.steps                 # typed values
    python -m sml.settings [params.yaml]  # check a file from the shell

A *profile* is a flat file of ``section.key: value`` lines; loading one lays it over the ``params.yaml`` of
the repository that holds it. Only the standard library, pydantic and ruamel.yaml (as DVC reads YAML 1.2)
are imported, so a check costs nothing next to the work it guards.
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .optional import missing
from .paths import repo_root

# ---- the choices, declared once (modules that need a list of them import the tuples) ----

Source = Literal["toy_math", "toy_code", "omni_math", "opencodeinstruct", "humaneval", "livecodebench",
                 "lost_in_conversation"]
MathSource = Literal["toy_math", "omni_math", "lost_in_conversation"]
CodeSource = Literal["toy_code", "opencodeinstruct", "humaneval", "livecodebench", "lost_in_conversation"]
Domain = Literal["math", "code"]
Variant = Literal["full", "sharded"]
Condition = Literal["sml_offline", "st_sft", "sml_online", "st_rl", "sml_qprime"]
MathGenerator = Literal["basic_arithmetic", "chain_sum"]
ShardReveal = Literal["every_turn", "on_question"]
TeacherKind = Literal["scripted", "hf", "openai"]
ClassifierKind = Literal["rules", "hf", "openai"]
EvalBackend = Literal["local", "openai"]
GRPOGeneration = Literal["engine", "vllm"]
VLLMMode = Literal["colocate", "server"]
Credit = Literal["conversation", "turn"]
QuestionSource = Literal["template", "model"]
FEEDBACK = ("verdict", "direction", "step", "tests")
FAMILIES = ("int", "list", "str")
SOURCES, DOMAINS, VARIANTS = get_args(Source), get_args(Domain), get_args(Variant)

PosInt = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Share = Annotated[float, Field(gt=0, le=1)]
Proportion = Annotated[float, Field(ge=0, le=1)]
Text = str
Name = Annotated[str, Field(min_length=1)]


def _csv(*options):
    """A comma-separated string of ``options`` without repeats (kept a string: notebooks and profiles
    write it so)."""
    def check(value: str) -> str:
        items = [p.strip() for p in value.split(",") if p.strip()]
        what = f"a comma-separated string of {', '.join(map(repr, options))}"
        if not items:
            raise ValueError(f"must be {what}, got {value!r}")
        if bad := [x for x in items if x not in options]:
            raise ValueError(f"must be {what}, got {value!r}: unknown {bad[0]!r}{_suggest(bad[0], options)}")
        if len(set(items)) < len(items):
            raise ValueError(f"must be {what} without repeats, got {value!r}")
        return value
    return Annotated[str, AfterValidator(check)]


def _unique(values: list) -> list:
    if len(set(values)) < len(values):
        raise ValueError(f"must be a list without repeats, got {values!r}")
    return values


def as_list(value: str) -> list[str]:
    """The items of a comma-separated setting ("a, b" -> ["a", "b"])."""
    return [p.strip() for p in value.split(",") if p.strip()]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ---- the sections, in params.yaml's order ----

class Tasks(Section):
    """01_tasks: the task sets (generation seed, sizes, toy-world difficulty)."""
    seed: Count
    sources: _csv(*SOURCES)
    hub_dir: Text
    n_train: Count
    n_dev: PosInt
    n_eval: PosInt
    math_generator: MathGenerator
    math_min_terms: Annotated[int, Field(ge=2, le=12)]
    math_max_terms: Annotated[int, Field(ge=2, le=12)]
    math_min_digits: Annotated[int, Field(ge=1, le=9)]
    math_max_digits: Annotated[int, Field(ge=1, le=9)]
    code_families: _csv(*FAMILIES)
    code_min_steps: Annotated[int, Field(ge=1, le=6)]
    code_max_steps: Annotated[int, Field(ge=1, le=6)]
    code_n_tests: Annotated[int, Field(ge=1, le=8)]
    code_worked: bool
    code_max_constant: Annotated[int, Field(ge=2, le=99)]


class BaseStudent(Section):
    """02_base_student: the embedded student's architecture and pretraining."""
    seed: Count
    n_pretrain: PosInt
    single_share: Proportion
    clarify_share: Proportion
    context_share: Proportion
    again_share: Proportion
    example_share: Proportion
    max_chat_turns: PosInt
    code_max_steps: Annotated[int, Field(ge=1, le=6)]
    math_max_terms: Annotated[int, Field(ge=2, le=12)]
    vocab_size: Annotated[int, Field(ge=300, le=65536)]
    hidden_size: PosInt
    num_layers: PosInt
    num_heads: PosInt
    num_kv_heads: PosInt
    intermediate_size: PosInt
    max_positions: PosInt
    single_epochs: Annotated[float, Field(ge=0)]
    epochs: Positive
    batch_size: PosInt
    lr: Positive
    eval_every: Count
    n_probe: PosInt


class Student(Section):
    model: Name
    dtype: Literal["float32", "bfloat16", "float16", "auto"]


class Machine(Section):
    """How a stage runs, not what it computes: no stage declares this section, so changing it reruns nothing."""
    threads: Count
    workers: Count


class Generation(Section):
    grpo: GRPOGeneration
    vllm_mode: VLLMMode
    vllm_server_url: Text
    vllm_gpu_memory: Share
    eval: EvalBackend
    eval_base_url: Text
    eval_api_key_env: Text


class Resume(Section):
    chunk_tasks: PosInt
    checkpoint_steps: Count


class Dialogue(Section):
    gamma: Share
    train_turns: PosInt
    eval_turns: PosInt
    temperature: NonNegative
    top_p: Share
    max_new_tokens: PosInt
    batch_size: PosInt
    shard_reveal: ShardReveal
    block_leaks: bool


class Teacher(Section):
    kind: TeacherKind
    feedback: _csv(*FEEDBACK)
    reveal_answer: bool
    restate: bool
    model: Text
    base_url: Text
    api_key_env: Text
    cache_dir: Text


class Evaluation(Section):
    """03 and 08: held-out evaluation of every condition (of each trained domain and seed in ``train``)."""
    n_tasks: PosInt
    split: Literal["eval", "dev"]
    variants: _csv(*VARIANTS)
    math_source: MathSource
    code_source: CodeSource
    cells_together: bool


class Train(Section):
    """The grid every training stage runs over (dvc.yaml's matrix) and the tasks it trains on."""
    domains: Annotated[list[Domain], Field(min_length=1), AfterValidator(_unique)]
    seeds: Annotated[list[Count], Field(min_length=1), AfterValidator(_unique)]
    math_source: Literal["toy_math", "omni_math"]
    code_source: Literal["toy_code", "opencodeinstruct"]


class Finetune(Section):
    lora_r: PosInt
    lora_alpha: PosInt
    lora_dropout: Annotated[float, Field(ge=0, lt=1)]
    epochs: Positive
    batch_size: PosInt
    lr: Positive


class OfflineSML(Section):
    n_tasks: PosInt
    samples_per_task: PosInt
    rounds: PosInt


class OnlineSML(Section):
    init: Literal["base", "sml_offline"]
    n_tasks: PosInt
    steps: PosInt
    tasks_per_step: PosInt
    group_size: Annotated[int, Field(ge=2)]
    lr: Positive
    credit: Credit
    beta: NonNegative
    micro_batch: Count


class STRL(Section):
    group_size: Annotated[int, Field(ge=2)]


class QPriming(Section):
    n_tasks: PosInt
    samples_per_task: PosInt
    decay: Annotated[float, Field(ge=0, le=1)]
    question_source: QuestionSource


class Classifier(Section):
    kind: ClassifierKind
    model: Text
    base_url: Text
    api_key_env: Text
    cache_dir: Text


class Diagnostic(Section):
    variant: Variant
    turns: Annotated[int, Field(ge=2)]
    batch_size: PosInt


SECTIONS: dict[str, type[Section]] = {
    "tasks": Tasks, "base_student": BaseStudent, "student": Student, "machine": Machine, "generation": Generation,
    "resume": Resume, "dialogue": Dialogue, "teacher": Teacher, "evaluation": Evaluation, "train": Train,
    "finetune": Finetune, "offline_sml": OfflineSML, "online_sml": OnlineSML, "st_rl": STRL,
    "q_priming": QPriming, "classifier": Classifier, "diagnostic": Diagnostic,
}


class Settings(SimpleNamespace):
    """All sections, checked (``cfg.dialogue.gamma``)."""

    def show(self, *sections: str) -> str:
        """The sections' values as YAML lines (all sections when none is named)."""
        return "\n".join(f"{name}:\n" + "\n".join(f"  {k}: {v!r}" for k, v in values.items())
                         for name, values in self.dump(*sections).items())

    def dump(self, *sections: str) -> dict:
        return {name: getattr(self, name).model_dump() for name in sections or SECTIONS}


# ---- checks across keys: (key reported, fn(cfg) -> problem or None); skipped when a section they read failed ----

def _unbuilt(source: str, cfg) -> str | None:
    sources = cfg.tasks.sources
    return f"{source!r} is not built: add it to tasks.sources ({sources!r})" if source not in as_list(sources) else None


def _at_most(lo: str, hi: str):
    def check(cfg):
        a, b = (getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1]) for k in (lo, hi))
        return f"must be <= {hi} ({b}), got {a}" if a > b else None
    return lo, check


def _divides(micro_batch: int, per_step: dict) -> str | None:
    """GRPO's micro-batches split a step's conversations evenly (gradient accumulation up to the step)."""
    if not micro_batch:
        return None
    bad = {k: n for k, n in per_step.items() if n % micro_batch}
    return (f"must be 0 or divide the conversations of a step ({', '.join(f'{k}: {n}' for k, n in bad.items())}), "
            f"got {micro_batch}") if bad else None


CROSS = [
    _at_most("tasks.math_min_terms", "tasks.math_max_terms"),
    _at_most("tasks.math_min_digits", "tasks.math_max_digits"),
    _at_most("tasks.code_min_steps", "tasks.code_max_steps"),
    ("base_student.clarify_share", lambda c: "base_student.single_share + base_student.clarify_share must be <= 1, "
     f"got {c.base_student.single_share} + {c.base_student.clarify_share}"
     if c.base_student.single_share + c.base_student.clarify_share > 1 else None),
    ("base_student.hidden_size", lambda c: f"must be a multiple of base_student.num_heads ({c.base_student.num_heads}), "
     f"got {c.base_student.hidden_size}" if c.base_student.hidden_size % c.base_student.num_heads else None),
    ("base_student.num_heads", lambda c: f"must be a multiple of base_student.num_kv_heads "
     f"({c.base_student.num_kv_heads}), got {c.base_student.num_heads}"
     if c.base_student.num_heads % c.base_student.num_kv_heads else None),
    ("teacher.model", lambda c: f"required for teacher.kind {c.teacher.kind!r} (a model id or path)"
     if c.teacher.kind != "scripted" and not c.teacher.model else None),
    ("teacher.base_url", lambda c: "required for teacher.kind 'openai'"
     if c.teacher.kind == "openai" and not c.teacher.base_url else None),
    ("teacher.reveal_answer", lambda c: f"only the scripted teacher can reveal the answer, not {c.teacher.kind!r}"
     if c.teacher.reveal_answer and c.teacher.kind != "scripted" else None),
    ("teacher.restate", lambda c: f"only the scripted teacher restates the problem, not {c.teacher.kind!r}"
     if c.teacher.restate and c.teacher.kind != "scripted" else None),
    ("classifier.model", lambda c: f"required for classifier.kind {c.classifier.kind!r} (a model id or path)"
     if c.classifier.kind != "rules" and not c.classifier.model else None),
    ("classifier.base_url", lambda c: "required for classifier.kind 'openai'"
     if c.classifier.kind == "openai" and not c.classifier.base_url else None),
    ("evaluation.math_source", lambda c: _unbuilt(c.evaluation.math_source, c)),
    ("evaluation.code_source", lambda c: _unbuilt(c.evaluation.code_source, c)),
    ("train.math_source", lambda c: _unbuilt(c.train.math_source, c) if "math" in c.train.domains else None),
    ("train.code_source", lambda c: _unbuilt(c.train.code_source, c) if "code" in c.train.domains else None),
    ("generation.vllm_server_url", lambda c: "required for generation.vllm_mode 'server' (e.g. http://localhost:8000)"
     if c.generation.grpo == "vllm" and c.generation.vllm_mode == "server" and not c.generation.vllm_server_url
     else None),
    ("generation.eval_base_url", lambda c: "required for generation.eval 'openai' (e.g. http://localhost:8000/v1)"
     if c.generation.eval == "openai" and not c.generation.eval_base_url else None),
    ("online_sml.micro_batch", lambda c: _divides(c.online_sml.micro_batch, {
        "online_sml": c.online_sml.tasks_per_step * c.online_sml.group_size,
        "st_rl": c.online_sml.tasks_per_step * c.st_rl.group_size})),
    ("diagnostic.turns", lambda c: f"must be <= dialogue.eval_turns ({c.dialogue.eval_turns}): a dialogue has at "
     f"most that many teacher turns, got {c.diagnostic.turns}" if c.diagnostic.turns > c.dialogue.eval_turns else None),
    ("diagnostic.variant", lambda c: f"{c.diagnostic.variant!r} is not evaluated: add it to evaluation.variants "
     f"({c.evaluation.variants!r})" if c.diagnostic.variant not in as_list(c.evaluation.variants) else None),
]


# ---- reporting: pydantic's errors as "key: must be ..., got ..." ----

def _suggest(name, known) -> str:
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"),
           "less_than": ("<", "lt")}
_TYPES = {"int_type": "an integer", "int_from_float": "an integer", "float_type": "a number", "bool_type": "true or false",
          "string_type": "a string", "list_type": "a list"}


def _problem(error: dict, fields) -> str:
    kind, got, ctx = error["type"], error.get("input"), error.get("ctx", {})
    if kind == "extra_forbidden":
        return f"unknown key{_suggest(error['loc'][-1], fields)}"
    if kind == "missing":
        return "missing"
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", ctx["expected"])
        return f"must be one of {', '.join(map(repr, options))}, got {got!r}{_suggest(got, options)}"
    if kind in _BOUNDS:
        sign, name = _BOUNDS[kind]
        return f"must be {sign} {ctx[name]:g}, got {got!r}"
    if kind == "string_too_short":
        return f"must be a non-empty string, got {got!r}"
    if kind == "too_short":
        return f"must not be empty, got {got!r}"
    if kind == "value_error":
        return str(ctx["error"])
    if kind in _TYPES:
        return f"must be {_TYPES[kind]}, got {got!r}"
    return f"{error['msg']}, got {got!r}"


def check(params: dict) -> Settings:
    """The settings of a params mapping; raises ValueError listing every problem, one per line."""
    if not isinstance(params, dict):
        raise ValueError(f"settings: must be a mapping of sections, got {params!r}")
    errors, sections = [], {}
    errors += [f"{name}: unknown section{_suggest(name, SECTIONS)}" for name in params if name not in SECTIONS]
    for name, model in SECTIONS.items():
        if name not in params:
            errors.append(f"{name}: missing section")
            continue
        try:
            sections[name] = model.model_validate(params[name])
        except ValidationError as e:
            for error in e.errors():
                key = ".".join(map(str, (name, *error["loc"][:1])))  # list items are reported at their key
                errors.append(f"{key}: {_problem(error, model.model_fields)}")
    cfg = Settings(**sections)
    for key, rule in CROSS:
        try:
            problem = rule(cfg)
        except AttributeError:  # a section it reads failed: its own problems are already listed
            continue
        if problem:
            errors.append(f"{key}: {problem}")
    if errors:
        raise ValueError("\n".join(errors))
    return cfg


# ---- files ----

def read_yaml(path) -> dict:
    from ruamel.yaml import YAML, YAMLError

    try:
        return YAML(typ="safe").load(Path(path).read_text(encoding="utf-8")) or {}
    except YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None


def params_of(path) -> dict:
    """The params mapping a settings file stands for: the file itself, or a profile (flat ``section.key``
    lines) laid over the ``params.yaml`` of the repository that holds it (or, outside one, that we run in)."""
    values = read_yaml(path)
    if not any("." in str(k) for k in values):
        return values
    if bad := [k for k in values if str(k).count(".") != 1]:
        raise ValueError(f"{path}: a profile's keys are section.key, got {bad[0]!r}")
    holder = next((p for p in Path(path).resolve().parents if (p / "dvc.yaml").exists()), None)
    params = read_yaml((holder or repo_root()) / "params.yaml")  # elsewhere: over the repository we run in
    for key, value in values.items():
        section, name = key.split(".")
        if not isinstance(params.get(section), dict) or name not in params[section]:
            raise ValueError(f"{path}: {key}: unknown key{_suggest(key, [f'{s}.{k}' for s in params for k in params[s]])}")
        params[section][name] = value
    return params


def load(path="params.yaml") -> Settings:
    """The checked settings of ``path`` (params.yaml or a profile); ValueError names every problem."""
    try:
        return check(params_of(path))
    except ValueError as e:
        raise ValueError(f"{path}:\n{e}") from None


# ---- notebooks: a settings file, an output folder and, where a stage repeats, its matrix cell ----

class Notebook(Section):
    """What papermill may set in a notebook's parameters cell (dvc.yaml passes these and nothing else)."""
    settings_file: Name
    out_root: Name
    train_domain: Domain | None = None
    seed: Count | None = None
    condition: Condition | None = None
    baseline: Literal["sft", "rl"] | None = None


_PLAIN = (bool, int, float, str, list, dict, type(None))  # what papermill -p / -y can inject


def for_notebook(namespace: dict, *sections: str, local: tuple[str, ...] = ()) -> Settings:
    """A notebook's settings, from its ``globals()`` right after the parameters cell: checks its parameters
    (an unknown one is a typo in ``-p``), loads its settings file and prints the ``sections`` it reads, so an
    executed notebook shows every value it ran with. ``local`` names the notebook's own knobs (not settings)."""
    given = {k: v for k, v in namespace.items() if not k.startswith("_") and k not in ("In", "Out")
             and isinstance(v, _PLAIN) and k not in local}
    known = Notebook.model_fields
    errors = [f"{k} (notebook parameter): unknown{_suggest(k, known)}" for k in given if k not in known]
    try:
        Notebook.model_validate({k: v for k, v in given.items() if k in known})
    except ValidationError as e:
        errors += [f"{error['loc'][0]} (notebook parameter): {_problem(error, known)}" for error in e.errors()]
    if errors:
        raise ValueError("\n".join(errors))
    cfg = load(repo_root() / given["settings_file"])  # papermill runs in the repository, Jupyter in notebooks/
    if "online_sml" in sections and cfg.generation.grpo == "vllm" and (problem := missing("vllm", "vllm", "")):
        raise ValueError(f"generation.grpo 'vllm' {problem.strip()}")  # GRPO's notebooks: before any model loads
    threads = use_threads(cfg.machine.threads)
    print(f"# {given['settings_file']}, as read (torch threads: {threads})\n{cfg.show(*sections)}")
    return cfg


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform tells it)."""
    import os

    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) or 1


def worker_count(machine: Machine) -> int:
    """``machine.workers``, or one per core when 0: how many one-thread processes share a stage's independent
    groups of dialogues (``sml.workers``)."""
    return machine.workers or cores()


def use_threads(threads: int) -> int:
    """Set torch's CPU threads for this process, on purpose rather than by torch's default: ``threads``, or one
    per core when 0. Stages run one at a time, so each takes every core (benchmarks/threads.py, docs/pipeline.md)."""
    import torch

    count = threads or cores()
    torch.set_num_threads(count)
    return count


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else "params.yaml"
    try:
        load(path)
    except (OSError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    print(f"{path}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
