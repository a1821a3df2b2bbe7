"""Code toy world: small program-induction tasks ("write f so that ...") with hidden unit tests.

Three families, each a short pipeline of steps whose number sets the difficulty:
``int`` (arithmetic on an integer), ``list`` (filter a list, then aggregate), ``str`` (string edits).
The reference solution spends one line per step, which a tiny model can learn to map from the words. A worked
solution (``worked``) names each step in a comment before its line, in the prompt's words, as a worked math
answer shows its steps: the student copies the next step's words, then writes their line next to them.
"""

from __future__ import annotations

import random
import string
from functools import partial

from sml.settings import FAMILIES

from .schema import TaskError, make_task



def _int_step(rng: random.Random, max_constant: int) -> tuple[str, str]:
    k = rng.randint(2, max_constant)
    return rng.choice([(f"adds {k}", f"x = x + {k}"), (f"subtracts {k}", f"x = x - {k}"),
                       (f"multiplies it by {k}", f"x = x * {k}"), (f"takes the remainder modulo {k}", f"x = x % {k}"),
                       (f"integer-divides it by {k}", f"x = x // {k}"), ("squares it", "x = x * x")])


def _list_conditions(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """``n`` conditions of different kinds (so never "even and odd")."""
    def condition(kind: str) -> tuple[str, str]:
        k = rng.randint(2, 9)
        return {"gt": (f"greater than {k}", f"v > {k}"), "lt": (f"less than {k}", f"v < {k}"),
                "parity": rng.choice([("even", "v % 2 == 0"), ("odd", "v % 2 == 1")]),
                "div": (f"divisible by {k}", f"v % {k} == 0")}[kind]
    return [condition(kind) for kind in rng.sample(["gt", "lt", "parity", "div"], min(n, 4))]


def _str_step(rng: random.Random) -> tuple[str, str]:
    k = rng.randint(2, 3)
    a, b = rng.sample("abcde", 2)
    return rng.choice([("reverses it", "s = s[::-1]"), ("makes it upper case", "s = s.upper()"),
                       (f"repeats it {k} times", f"s = s * {k}"), (f"appends '{a}'", f"s = s + '{a}'"),
                       (f"removes the first {k} characters", f"s = s[{k}:]"),
                       (f"replaces every '{a}' with '{b}'", f"s = s.replace('{a}', '{b}')")])


def _pipeline(parts: list[tuple[str, str]], var: str, noun: str, worked: bool = False) -> tuple[str, list[str], str]:
    """Prompt, shards and one-line-per-step solution for ``f(var)`` applying ``parts`` in order (``worked``: each
    line after a comment naming its step)."""
    steps = len(parts)
    prompt = (f"Write a Python function f({var}) that takes {noun} {var}, "
              f"{', then '.join(p[0] for p in parts)}, and returns the result.")
    intent = (f"Write a Python function f({var}) that takes {noun} {var} and returns "
              f"{noun} computed in {steps} step{'s' * (steps > 1)}.")
    shards = [intent] + [f"Step {i}: it {p[0]}." for i, p in enumerate(parts, 1)]
    code = f"def f({var}):\n" + "".join((f"    # {p[0]}\n" if worked else "") + f"    {p[1]}\n" for p in parts) \
        + f"    return {var}\n"
    return prompt, shards, code


def _int_task(rng: random.Random, steps: int, worked: bool = False, max_constant: int = 9
              ) -> tuple[str, list[str], str, list]:
    prompt, shards, code = _pipeline([_int_step(rng, max_constant) for _ in range(steps)], "x", "an integer", worked)
    return prompt, shards, code, rng.sample(range(-20, 31), 8)


def _str_task(rng: random.Random, steps: int, worked: bool = False) -> tuple[str, list[str], str, list]:
    prompt, shards, code = _pipeline([_str_step(rng) for _ in range(steps)], "s", "a string", worked)
    return prompt, shards, code, ["".join(rng.choices(string.ascii_lowercase[:6], k=rng.randint(4, 8))) for _ in range(8)]


def _list_task(rng: random.Random, steps: int, worked: bool = False) -> tuple[str, list[str], str, list]:
    """(One line whatever its conditions: ``worked`` changes nothing here.)"""
    conditions = _list_conditions(rng, steps)
    what, expr = rng.choice([("the sum of", "sum({g})"), ("the number of", "len([{g}])"),
                             ("the largest of", "max([{g}], default=0)")])
    words = " and ".join(c[0] for c in conditions)
    tail = " (0 if there are none)" if what == "the largest of" else ""
    prompt = (f"Write a Python function f(xs) that takes a list of integers xs and returns {what} "
              f"the items that are {words}{tail}.")
    intent = "Write a Python function f(xs) that takes a list of integers and returns a number computed from some of its items."
    shards = [intent] + [f"Only use the items that are {c[0]}." for c in conditions] + [f"Return {what} those items{tail}."]
    gen = f"v for v in xs if {' and '.join(c[1] for c in conditions)}"
    code = f"def f(xs):\n    return {expr.format(g=gen)}\n"
    inputs = [[rng.randint(-5, 15) for _ in range(rng.randint(0, 7))] for _ in range(8)]
    return prompt, shards, code, inputs


_BUILDERS = {"int": _int_task, "list": _list_task, "str": _str_task}


def generate(n: int, seed: int, families: tuple[str, ...] = FAMILIES, min_steps: int = 1, max_steps: int = 2,
             n_tests: int = 5, worked: bool = False, max_constant: int = 9) -> list[dict]:
    """``n`` distinct code tasks (distinct prompts), deterministic in ``seed``; ``worked`` solutions name each
    step in a comment (the same tasks otherwise: the same prompts and tests). Integer steps use constants
    2..``max_constant``: the integer family's space of 1-2 step prompts grows with it (about 1,660 at 9)."""
    families = list(families)
    builders = {**_BUILDERS, "int": partial(_int_task, max_constant=max_constant)}
    rng = random.Random(seed)
    tasks, seen, draws = [], set(), 0
    while len(tasks) < n and draws < 20 * n + 100:
        draws += 1
        family, steps = rng.choice(families), rng.randint(min_steps, max_steps)
        prompt, shards, code, inputs = builders[family](rng, steps, worked)
        if prompt in seen:
            continue
        seen.add(prompt)
        namespace: dict = {}
        exec(code, namespace)  # our own reference solution: computes the expected outputs
        cases = [(x, namespace["f"](x)) for x in inputs][:n_tests]
        if len({repr(y) for _, y in cases}) < min(2, n_tests):
            continue  # degenerate: a constant function would pass every test
        tests = [f"assert f({x!r}) == {y!r}" for x, y in cases]
        tasks.append(make_task(
            id=f"toy_code/{len(tasks)}", domain="code", source="toy_code", prompt=prompt, solution=code,
            entry_point="f", tests=tests, shards=shards, metadata={"family": family, "steps": steps}))
    if len(tasks) < n:
        raise TaskError(f"tasks.code: only {len(tasks)} distinct tasks came out of {draws} draws with families "
                        f"{families} and {min_steps}-{max_steps} steps, but {n} were asked for; "
                        f"raise code_max_steps or lower n_train/n_eval")
    return tasks
