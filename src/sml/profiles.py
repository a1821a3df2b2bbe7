"""Profiles: named sets of ``params.yaml`` values (``profiles/<name>.yaml``, flat ``section.key: value``) for
runs other than the embedded CPU default that params.yaml holds: real models on GPUs (``qwen2.5-7b``), or the
smoke test's sizes (``smoke``, read by the notebooks' default ``settings_file`` and never written). A profile
holds only the values that differ from params.yaml, so every value is written in one place. Applying one
rewrites those values in params.yaml, comments and layout kept, so ``git diff params.yaml`` and ``dvc params
diff`` show the switch and ``dvc repro`` reruns exactly the stages it touches::

    python -m sml.profiles                         # list the profiles
    python -m sml.profiles qwen2.5-7b              # check it against params.yaml and show what would change
    python -m sml.profiles qwen2.5-7b --write      # ... and write it
    git checkout params.yaml                       # back to the embedded default

The result is checked with ``sml.settings`` before anything is written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .settings import check

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
COMMENT_COLUMN = 28


def names(folder=PROFILES) -> list[str]:
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def load(name: str, folder=PROFILES) -> dict:
    """``{"section.key": value}`` of a profile, read as DVC reads YAML (1.2)."""
    from ruamel.yaml import YAML

    path = Path(folder) / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"profile {name!r}: no {path} (profiles: {', '.join(names(folder)) or 'none'})")
    values = YAML(typ="safe").load(path.read_text()) or {}
    bad = [k for k in values if not isinstance(k, str) or k.count(".") != 1]
    if bad:
        raise ValueError(f"{path}: keys must be section.key, got {bad[0]!r}")
    return values


def scalar(value) -> str:
    """A value as params.yaml writes it: plain where YAML reads it back unchanged, else JSON-quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.10f}".rstrip("0").rstrip(".") + (".0" if value == int(value) else "")
    if isinstance(value, list):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    if isinstance(value, str) and (not value or re.search(r"^[\d\-+.\[{'\"&*!|>%@`]|: | #|^(true|false|null)$", value)):
        return json.dumps(value)
    return str(value)


def rewrite(text: str, values: dict) -> str:
    """``text`` (a params.yaml) with ``values`` written into the lines of their keys, comments kept in place."""
    lines, section = text.split("\n"), None
    todo = dict(values)
    for i, line in enumerate(lines):
        if m := re.match(r"^(\w+):", line):
            section = m.group(1)
        elif section and (m := re.match(r"^(  (\w+):\s*)(.*?)(\s+#.*)?$", line)) and f"{section}.{m.group(2)}" in todo:
            new = scalar(todo.pop(f"{section}.{m.group(2)}"))
            comment = m.group(4) or ""
            if comment:  # params.yaml's layout: comments at column 28, or two spaces after a longer value
                comment = " " * max(2, COMMENT_COLUMN - len(m.group(1)) - len(new)) + comment.lstrip()
            lines[i] = m.group(1) + new + comment
    if todo:
        raise ValueError(f"unknown params.yaml key(s) in the profile: {', '.join(todo)}")
    return "\n".join(lines)


def apply(name: str, params_path="params.yaml", folder=PROFILES) -> tuple[str, dict]:
    """The new params.yaml text with profile ``name`` applied and ``{key: (old, new)}`` for what changes;
    raises ValueError (every problem, one per line) when the result does not pass ``sml.settings``."""
    from ruamel.yaml import YAML

    values = load(name, folder)
    old_text = Path(params_path).read_text()
    new_text = rewrite(old_text, values)
    old, new = (YAML(typ="safe").load(t) for t in (old_text, new_text))
    for key, value in values.items():  # what was written reads back as the profile's value
        if _get(new, key) != value:
            raise ValueError(f"profile {name!r}: {key} would read back as {_get(new, key)!r}, not {value!r}")
    try:
        check(new)
    except ValueError as e:
        raise ValueError(f"profile {name!r} applied to {params_path}:\n{e}") from None
    return new_text, {k: (_get(old, k), v) for k, v in values.items() if _get(old, k) != v}


def _get(params: dict, key: str):
    section, name = key.split(".")
    return params[section][name]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="List, check and apply parameter profiles (profiles/*.yaml).")
    parser.add_argument("name", nargs="?", help="a profile; none: list them")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--write", action="store_true", help="write the profile into --params")
    args = parser.parse_args(argv)
    if not args.name:
        print("\n".join(names()))
        return 0
    try:
        text, changes = apply(args.name, args.params)
    except (OSError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    for key, (old, new) in changes.items():
        print(f"{key}: {old!r} -> {new!r}")
    if args.write:
        tmp = Path(f"{args.params}.tmp")
        tmp.write_text(text)
        tmp.replace(args.params)  # all or nothing
        print(f"{args.params}: profile {args.name} written ({len(changes)} values changed)")
    else:
        print(f"{args.name}: ok ({len(changes)} values would change; --write to apply)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
