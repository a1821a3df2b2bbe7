"""Parameter checks for every stage, run before any heavy work.

``SCHEMA`` holds one rule per ``params.yaml`` key; ``NOTEBOOKS`` maps each notebook's parameters (the
names in its ``parameters`` cell) to the params.yaml key that dvc.yaml passes it, or to a rule of its own
when params.yaml has no such key (``out_root``, ``train_domain``, ...). A rule returns ``None`` for a
good value and otherwise what is wrong with it. Every problem is reported at once, one per line, each
line starting with the key it is about::

    check_params_file("params.yaml")                  # or: python -m sml.config [params.yaml]
    settings = check_notebook("05_online_sml", globals())  # right after a notebook's imports

Only the standard library is imported (with ``sml.optional``, itself stdlib-only; ruamel.yaml, as DVC
reads params.yaml, only to read a file), so the checks cost nothing next to the work they guard. The
choices mirror constants of the modules that use them (``tests/test_config.py`` keeps them equal).
"""

from __future__ import annotations

import difflib
import sys

from .optional import missing

# The choices (mirrors of sml.tasks.build.SOURCES, sml.tasks.toy_math.GENERATORS, ...).
SOURCES = ("toy_math", "toy_code", "omni_math", "opencodeinstruct", "humaneval", "livecodebench",
           "lost_in_conversation")
EVAL_ONLY = ("humaneval", "livecodebench", "lost_in_conversation")  # no train split
MATH_SOURCES = ("toy_math", "omni_math", "lost_in_conversation")
CODE_SOURCES = ("toy_code", "opencodeinstruct", "humaneval", "livecodebench", "lost_in_conversation")
GENERATORS = ("basic_arithmetic", "chain_sum")
FAMILIES = ("int", "list", "str")
DOMAINS = ("math", "code")
VARIANTS = ("full", "sharded")
FEEDBACK = ("verdict", "direction", "step", "tests")
TEACHER_KINDS = ("scripted", "hf", "openai")
SHARD_REVEAL = ("every_turn", "on_question")
CREDIT = ("conversation", "turn")
CONDITIONS = ("sml_offline", "st_sft", "sml_online", "st_rl", "sml_qprime")
QUESTION_SOURCES = ("template", "model")
CLASSIFIER_KINDS = ("rules", "hf", "openai")
DTYPES = ("float32", "bfloat16", "float16", "auto")
GENERATION = ("engine", "vllm")          # sml.train.grpo.GENERATION
VLLM_MODES = ("colocate", "server")
EVAL_BACKENDS = ("local", "openai")      # sml.evaluation.evaluate.BACKENDS
TRAIN_SOURCES = {"math": ("toy_math", "omni_math"), "code": ("toy_code", "opencodeinstruct")}


# ---- rules: value -> None if good, else "must be ..., got ..." ----

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _suggest(name, known) -> str:
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _int(lo=0, hi=None):
    what = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    return lambda v: None if _is_int(v) and lo <= v and (hi is None or v <= hi) else f"must be {what}, got {v!r}"


def _number(lo=0, hi=None, *, open_lo=True, open_hi=False):
    """A number in the interval from lo to hi (hi None: no upper bound); open ends are excluded."""
    if hi is None:
        what = f"a number {'>' if open_lo else '>='} {lo}"
    else:
        what = f"a number in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"

    def check(v):
        ok = _is_number(v) and (lo < v if open_lo else lo <= v) and (hi is None or (v < hi if open_hi else v <= hi))
        return None if ok else f"must be {what}, got {v!r}"
    return check


def _choice(*options):
    def check(v):
        if v in options and isinstance(v, str):
            return None
        return f"must be one of {', '.join(map(repr, options))}, got {v!r}{_suggest(v, options)}"
    return check


def _string(empty=True):
    what = "a string" if empty else "a non-empty string"
    return lambda v: None if isinstance(v, str) and (empty or v.strip()) else f"must be {what}, got {v!r}"


def _bool(v):
    return None if isinstance(v, bool) else f"must be true or false, got {v!r}"


def as_list(value) -> list:
    """The items of a comma-separated string ("0, 1" -> [0, 1]; digits become ints), of a single int
    (papermill turns ``-p seeds "0"`` into 0) or of a list."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        return [int(p) if p.lstrip("-").isdigit() else p for p in parts]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _list(*options, csv=True):
    """A non-empty list without repeats of ``options`` (none given: of integers >= 0); as a comma-separated
    string (DVC cannot pass a list to a command) or, with ``csv=False``, as a YAML list."""
    what = ("a comma-separated string" if csv else "a list") + \
        (f" of {', '.join(map(repr, options))}" if options else " of integers >= 0")

    def check(v):
        if not (isinstance(v, str) or _is_int(v) if csv else isinstance(v, list)) or not as_list(v):
            return f"must be {what}, got {v!r}"
        items = as_list(v)
        good = (lambda x: isinstance(x, str) and x in options) if options else (lambda x: _is_int(x) and x >= 0)
        bad = [x for x in items if not good(x)]
        if bad:
            return f"must be {what}, got {v!r}: unknown {bad[0]!r}" + (_suggest(bad[0], options) if options else "")
        if len(set(items)) < len(items):
            return f"must be {what} without repeats, got {v!r}"
        return None
    return check


# ---- params.yaml ----

SCHEMA = {
    "tasks": {
        "seed": _int(0), "sources": _list(*SOURCES), "hub_dir": _string(), "n_train": _int(0), "n_eval": _int(1),
        "math_generator": _choice(*GENERATORS), "math_min_terms": _int(2, 12), "math_max_terms": _int(2, 12),
        "math_min_digits": _int(1, 9), "math_max_digits": _int(1, 9), "code_families": _list(*FAMILIES),
        "code_min_steps": _int(1, 6), "code_max_steps": _int(1, 6), "code_n_tests": _int(1, 8)},
    "base_student": {
        "seed": _int(0), "n_pretrain": _int(1), "code_max_steps": _int(1, 6), "vocab_size": _int(300, 65536),
        "hidden_size": _int(1), "num_layers": _int(1), "num_heads": _int(1), "num_kv_heads": _int(1),
        "intermediate_size": _int(1), "max_positions": _int(1), "epochs": _number(0), "batch_size": _int(1),
        "lr": _number(0), "eval_every": _int(0), "n_probe": _int(1)},
    "resume": {"chunk_tasks": _int(1), "checkpoint_steps": _int(0)},
    "student": {"model": _string(False), "dtype": _choice(*DTYPES)},
    "generation": {
        "grpo": _choice(*GENERATION), "vllm_mode": _choice(*VLLM_MODES), "vllm_server_url": _string(),
        "vllm_gpu_memory": _number(0, 1), "eval": _choice(*EVAL_BACKENDS), "eval_base_url": _string(),
        "eval_api_key_env": _string()},
    "dialogue": {
        "gamma": _number(0, 1), "train_turns": _int(1), "eval_turns": _int(1), "temperature": _number(0, open_lo=False),
        "top_p": _number(0, 1), "max_new_tokens": _int(1), "batch_size": _int(1),
        "shard_reveal": _choice(*SHARD_REVEAL), "block_leaks": _bool},
    "teacher": {
        "kind": _choice(*TEACHER_KINDS), "feedback": _list(*FEEDBACK), "reveal_answer": _bool, "model": _string(),
        "base_url": _string(), "api_key_env": _string(), "cache_dir": _string()},
    "evaluation": {
        "seeds": _list(), "train_domains": _list(*DOMAINS), "n_tasks": _int(1), "variants": _list(*VARIANTS),
        "math_source": _choice(*MATH_SOURCES), "code_source": _choice(*CODE_SOURCES)},
    "train": {"domains": _list(*DOMAINS, csv=False), "seeds": _list(csv=False),
              "math_source": _choice(*TRAIN_SOURCES["math"]), "code_source": _choice(*TRAIN_SOURCES["code"])},
    "finetune": {
        "lora_r": _int(1), "lora_alpha": _int(1), "lora_dropout": _number(0, 1, open_lo=False, open_hi=True),
        "epochs": _number(0), "batch_size": _int(1), "lr": _number(0)},
    "offline_sml": {"n_tasks": _int(1), "samples_per_task": _int(1), "rounds": _int(1)},
    "online_sml": {
        "init": _choice("base", "sml_offline"), "n_tasks": _int(1), "steps": _int(1), "tasks_per_step": _int(1),
        "group_size": _int(2), "lr": _number(0), "credit": _choice(*CREDIT), "beta": _number(0, open_lo=False),
        "micro_batch": _int(0)},
    "st_rl": {"group_size": _int(2)},
    "q_priming": {"n_tasks": _int(1), "samples_per_task": _int(1), "decay": _number(0, 1, open_lo=False),
                  "question_source": _choice(*QUESTION_SOURCES)},
    "classifier": {"kind": _choice(*CLASSIFIER_KINDS), "model": _string(), "base_url": _string(), "api_key_env": _string(),
                   "cache_dir": _string()},
    "diagnostic": {"variant": _choice(*VARIANTS), "turns": _int(2), "batch_size": _int(1)},
}


def _unbuilt(source, sources):
    """A task source that the tasks stage does not build."""
    return f"{source!r} is not built: add it to tasks.sources ({sources!r})" if source not in as_list(sources) else None


def _unbuilt_if_trained(domain):
    """train.<domain>_source must be built by the tasks stage when the domain is trained on."""
    return lambda source, sources, domains: _unbuilt(source, sources) if domain in domains else None


# Checks across keys: (keys, fn(*values) -> problem or None), run when every key is there and valid;
# the problem is reported under the first key.
CROSS = [
    (("tasks.math_min_terms", "tasks.math_max_terms"),
     lambda lo, hi: f"must be <= tasks.math_max_terms ({hi}), got {lo}" if lo > hi else None),
    (("tasks.math_min_digits", "tasks.math_max_digits"),
     lambda lo, hi: f"must be <= tasks.math_max_digits ({hi}), got {lo}" if lo > hi else None),
    (("tasks.code_min_steps", "tasks.code_max_steps"),
     lambda lo, hi: f"must be <= tasks.code_max_steps ({hi}), got {lo}" if lo > hi else None),
    (("base_student.hidden_size", "base_student.num_heads"),
     lambda h, n: f"must be a multiple of base_student.num_heads ({n}), got {h}" if h % n else None),
    (("base_student.num_heads", "base_student.num_kv_heads"),
     lambda n, kv: f"must be a multiple of base_student.num_kv_heads ({kv}), got {n}" if n % kv else None),
    (("teacher.model", "teacher.kind"),
     lambda m, kind: f"required for teacher.kind {kind!r} (a model id or path)" if kind != "scripted" and not m
     else None),
    (("teacher.base_url", "teacher.kind"),
     lambda url, kind: "required for teacher.kind 'openai'" if kind == "openai" and not url else None),
    (("teacher.reveal_answer", "teacher.kind"),
     lambda r, kind: f"only the scripted teacher can reveal the answer, not {kind!r}" if r and kind != "scripted"
     else None),
    (("classifier.model", "classifier.kind"),
     lambda m, kind: f"required for classifier.kind {kind!r} (a model id or path)" if kind != "rules" and not m
     else None),
    (("classifier.base_url", "classifier.kind"),
     lambda url, kind: "required for classifier.kind 'openai'" if kind == "openai" and not url else None),
    (("evaluation.train_domains", "train.domains"),
     lambda e, t: f"must equal train.domains {t}, got {e!r}" if sorted(as_list(e)) != sorted(t) else None),
    (("evaluation.seeds", "train.seeds"),
     lambda e, t: f"must equal train.seeds {t}, got {e!r}" if sorted(as_list(e)) != sorted(t) else None),
    (("evaluation.math_source", "tasks.sources"), _unbuilt),
    (("evaluation.code_source", "tasks.sources"), _unbuilt),
    (("train.math_source", "tasks.sources", "train.domains"), _unbuilt_if_trained("math")),
    (("train.code_source", "tasks.sources", "train.domains"), _unbuilt_if_trained("code")),
    (("generation.vllm_server_url", "generation.grpo", "generation.vllm_mode"),
     lambda url, grpo, mode: "required for generation.vllm_mode 'server' (e.g. http://localhost:8000)"
     if grpo == "vllm" and mode == "server" and not url else None),
    (("generation.eval_base_url", "generation.eval"),
     lambda url, backend: "required for generation.eval 'openai' (e.g. http://localhost:8000/v1)"
     if backend == "openai" and not url else None),
    (("diagnostic.turns", "dialogue.eval_turns"),
     lambda t, e: f"must be <= dialogue.eval_turns ({e}): a dialogue has at most that many teacher turns, got {t}"
     if t > e else None),
    (("diagnostic.variant", "evaluation.variants"),
     lambda v, vs: f"{v!r} is not evaluated: add it to evaluation.variants ({vs!r})" if v not in as_list(vs) else None),
]


def _rule(key: str):
    section, name = key.split(".")
    return SCHEMA[section][name]


def _cross(flat: dict) -> list[tuple[str, str]]:
    found = [(keys[0], fn(*(flat[k] for k in keys))) for keys, fn in CROSS if all(k in flat for k in keys)]
    return [(key, problem) for key, problem in found if problem]


def _fail(errors: list[str]) -> None:
    if errors:
        raise ValueError("\n".join(errors))


def check_params(params: dict) -> None:
    """Raise ValueError listing every problem of a params.yaml mapping, one per line."""
    if not isinstance(params, dict):
        raise ValueError(f"params: must be a mapping of sections, got {params!r}")
    errors, flat = [], {}
    for section, values in params.items():
        if section not in SCHEMA:
            errors.append(f"{section}: unknown section{_suggest(section, SCHEMA)}")
        elif not isinstance(values, dict):
            errors.append(f"{section}: must be a mapping of keys, got {values!r}")
        else:
            for name, value in values.items():
                key = f"{section}.{name}"
                if name not in SCHEMA[section]:
                    errors.append(f"{key}: unknown key{_suggest(name, SCHEMA[section])}")
                elif problem := SCHEMA[section][name](value):
                    errors.append(f"{key}: {problem}")
                else:
                    flat[key] = value
    for section, rules in SCHEMA.items():
        if section not in params:
            errors.append(f"{section}: missing section")
        elif isinstance(params[section], dict):
            errors += [f"{section}.{name}: missing" for name in rules if name not in params[section]]
    errors += [f"{key}: {problem}" for key, problem in _cross(flat)]
    _fail(errors)


def check_params_file(path="params.yaml") -> dict:
    """Read ``path`` as DVC does (YAML 1.2: ``1e-5`` is a number) and check it; return the params."""
    from ruamel.yaml import YAML, YAMLError

    try:
        with open(path, encoding="utf-8") as f:
            params = YAML(typ="safe").load(f) or {}
    except YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    check_params(params)
    return params


# ---- notebooks: parameter name -> params.yaml key (as dvc.yaml passes it) or a rule of its own ----

_DIALOGUE = {k: f"dialogue.{k}"
             for k in ("gamma", "temperature", "top_p", "max_new_tokens", "batch_size", "block_leaks")}
_TEACHER = {f"teacher_{k}": f"teacher.{k}" for k in SCHEMA["teacher"]}
_LORA = {k: f"finetune.{k}" for k in ("lora_r", "lora_alpha", "lora_dropout")}
_SFT = {"epochs": "finetune.epochs", "train_batch_size": "finetune.batch_size", "lr": "finetune.lr"}
_GENERATORS = {k: f"tasks.{k}" for k in ("math_generator", "math_min_terms", "math_max_terms", "math_min_digits",
                                          "math_max_digits", "code_families", "code_min_steps", "code_n_tests")}
_EVALUATION = {**{k: f"evaluation.{k}" for k in ("seeds", "n_tasks", "variants", "math_source", "code_source")},
               "max_turns": "dialogue.eval_turns", **_DIALOGUE, "shard_reveal": "dialogue.shard_reveal", **_TEACHER,
               **{f"classifier_{k}": f"classifier.{k}" for k in SCHEMA["classifier"]}}
_CHUNK = {"chunk_tasks": "resume.chunk_tasks"}
_CHECKPOINT = {"checkpoint_steps": "resume.checkpoint_steps"}
_STUDENT = {"model": "student.model", "dtype": "student.dtype"}
_VLLM = {"generation": "generation.grpo",
         **{k: f"generation.{k}" for k in ("vllm_mode", "vllm_server_url", "vllm_gpu_memory")}}
_REMOTE = {"eval_backend": "generation.eval", "eval_base_url": "generation.eval_base_url",
           "eval_api_key_env": "generation.eval_api_key_env"}
# out_root and the matrix cell (train.domains x train.seeds) are set by dvc.yaml itself, not by a params.yaml key.
_TRAINING = {"out_root": _string(False), **_STUDENT, "train_domain": _choice(*DOMAINS), "seed": _int(0),
             "math_source": "train.math_source", "code_source": "train.code_source"}

NOTEBOOKS = {
    "01_tasks": {"out_root": _string(False), **{k: f"tasks.{k}" for k in SCHEMA["tasks"]}},
    "02_base_student": {"out_root": _string(False), "student_model": "student.model", **_CHECKPOINT,
                        **{k: f"base_student.{k}" for k in SCHEMA["base_student"]}, **_GENERATORS,
                        "code_max_steps_tasks": "tasks.code_max_steps"},
    "03_baseline_dialogues": {"out_root": _string(False), **_CHUNK, **_STUDENT, "adapter": _string(), **_REMOTE,
                              **_EVALUATION},
    "04_offline_sml": {**_TRAINING, **_REMOTE, **_CHUNK, **_CHECKPOINT,
                       **{k: f"offline_sml.{k}" for k in SCHEMA["offline_sml"]},
                       "max_turns": "dialogue.train_turns", **_DIALOGUE, **_TEACHER, **_LORA, **_SFT},
    "05_online_sml": {**_TRAINING, **_VLLM, **_CHECKPOINT, **{k: f"online_sml.{k}" for k in SCHEMA["online_sml"]},
                      "max_turns": "dialogue.train_turns", **_DIALOGUE, **_TEACHER, **_LORA},
    # one notebook, two stages: st_sft (baseline sft) draws offline SML's tasks, st_rl (rl) online SML's
    "06_single_turn_baselines": {
        **_TRAINING, **_VLLM, **_CHECKPOINT, "baseline": _choice("sft", "rl"),
        "n_tasks": {"sft": "offline_sml.n_tasks", "rl": "online_sml.n_tasks"}, **_LORA,
        "n_examples": _int(0), **_SFT, "steps": "online_sml.steps", "tasks_per_step": "online_sml.tasks_per_step",
        "group_size": "st_rl.group_size", "rl_lr": "online_sml.lr", "beta": "online_sml.beta",
        "micro_batch": "online_sml.micro_batch", **_DIALOGUE, **_TEACHER},
    "07_q_priming": {**_TRAINING, **_REMOTE, **_VLLM, **_CHUNK, **_CHECKPOINT,
                     **{k: f"q_priming.{k}" for k in SCHEMA["q_priming"]},
                     "max_turns": "dialogue.train_turns", **_DIALOGUE, **_TEACHER, **_LORA, **_SFT,
                     **{k: f"online_sml.{k}"
                        for k in ("steps", "tasks_per_step", "group_size", "credit", "beta", "micro_batch")},
                     "rl_lr": "online_sml.lr"},
    "08_evaluate": {"out_root": _string(False), **_CHUNK, "condition": _choice(*CONDITIONS), **_STUDENT, **_REMOTE,
                    "train_domains": "evaluation.train_domains", **_EVALUATION},
    "09_loss_diagnostic": {"out_root": _string(False), **_STUDENT, "conditions": _list("base", *CONDITIONS),
                           **{k: f"evaluation.{k}" for k in ("train_domains", "seeds", "math_source", "code_source")},
                           **{k: f"diagnostic.{k}" for k in SCHEMA["diagnostic"]}},
    "10_report": {"out_root": _string(False), "train_turns": "dialogue.train_turns", "gallery_seed": _int(0),
                  "gallery_per_kind": _int(0)},
}

_PLAIN = (bool, int, float, str, list, dict, type(None))  # what papermill -p / -y can inject


def params_key(notebook: str, name: str, values: dict | None = None) -> str | None:
    """The params.yaml key that feeds ``name`` of ``notebook`` (None: it has a rule of its own);
    for 06, ``values["baseline"]`` picks the stage."""
    source = NOTEBOOKS[notebook][name]
    if isinstance(source, dict):
        source = source.get((values or {}).get("baseline"), next(iter(source.values())))
    return source if isinstance(source, str) else None


def check_notebook(notebook: str, values: dict) -> dict:
    """Check a notebook's parameters and return them ({name: value}). ``values`` may be the notebook's
    ``globals()``: its parameters are picked out, and any other plain value (int, str, ...) that is not
    private is taken for a parameter papermill injected under an unknown name (a typo in ``-p``). So call
    it right after the imports, before the notebook assigns anything (in a live kernel, restart before
    running that cell again)."""
    if notebook not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}{_suggest(notebook, NOTEBOOKS)}")
    table, errors, flat, label = NOTEBOOKS[notebook], [], {}, {}
    for name in table:
        key = params_key(notebook, name, values)
        where = f"{key} (notebook parameter {name})" if key else f"{name} (notebook {notebook})"
        if name not in values:
            errors.append(f"{where}: not set")
        elif problem := (_rule(key) if key else table[name])(values[name]):
            errors.append(f"{where}: {problem}")
        elif key:
            flat[key], label[key] = values[name], where
    errors += [f"{name} (notebook {notebook}): unknown parameter{_suggest(name, table)}"
               for name, value in values.items()
               if name not in table and not name.startswith("_") and name not in ("In", "Out")
               and isinstance(value, _PLAIN)]
    errors += [f"{label[key]}: {problem}" for key, problem in _cross(flat)]
    if flat.get("generation.grpo") == "vllm" and (problem := missing("vllm", "vllm", "generation.grpo 'vllm'")):
        errors.append(f"{label['generation.grpo']}: {problem}")
    _fail(errors)
    return {name: values[name] for name in table}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else "params.yaml"
    try:
        check_params_file(path)
    except (OSError, ValueError) as e:
        print(f"{path}:\n{e}", file=sys.stderr)
        return 1
    print(f"{path}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
