"""Math toy world: multi-step arithmetic from reasoning-gym, with an underspecified (sharded) variant."""

from __future__ import annotations

import ast

import reasoning_gym

from .schema import TaskError, make_task

GENERATORS = ("basic_arithmetic", "chain_sum")
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def check_difficulty(generator: str, min_terms: int, max_terms: int, min_digits: int, max_digits: int) -> None:
    """Reject impossible settings up front, naming the parameter."""
    if generator not in GENERATORS:
        raise TaskError(f"tasks.math_generator: unknown generator {generator!r}; expected one of {GENERATORS}")
    for key, value, low, high in [("math_min_terms", min_terms, 2, 12), ("math_max_terms", max_terms, 2, 12),
                                  ("math_min_digits", min_digits, 1, 9), ("math_max_digits", max_digits, 1, 9)]:
        if not isinstance(value, int) or not low <= value <= high:
            raise TaskError(f"tasks.{key}: must be an integer in [{low}, {high}], got {value!r}")
    if min_terms > max_terms:
        raise TaskError(f"tasks.math_min_terms ({min_terms}) is larger than tasks.math_max_terms ({max_terms})")
    if min_digits > max_digits:
        raise TaskError(f"tasks.math_min_digits ({min_digits}) is larger than tasks.math_max_digits ({max_digits})")


def shards_of(expression: str) -> list[str]:
    """Split an expression into an intent plus one shard per operation, in evaluation order."""
    steps: list[str] = []

    def name(node: ast.AST) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            if isinstance(node.operand, ast.Constant):
                return f"-{node.operand.value}"
            inner = name(node.operand)
            steps.append(f"negate {inner}")
        elif isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = name(node.left), name(node.right)
            steps.append(f"compute {left} {_OPS[type(node.op)]} {right}")
        else:
            raise TaskError(f"cannot shard expression {expression!r}: unsupported {ast.dump(node)}")
        return f"the result of step {len(steps)}"

    name(ast.parse(expression, mode="eval").body)
    if not steps:
        return []
    intent = (f"I need the value of an arithmetic expression that is built in {len(steps)} "
              f"step{'s' if len(steps) > 1 else ''}. The answer is the result of the last step.")
    return [intent] + [f"Step {i}: {s}." for i, s in enumerate(steps, 1)]


def generate(n: int, seed: int, generator: str = "basic_arithmetic", min_terms: int = 2, max_terms: int = 3,
             min_digits: int = 1, max_digits: int = 2) -> list[dict]:
    """``n`` distinct arithmetic tasks (distinct prompts), deterministic in ``seed``."""
    check_difficulty(generator, min_terms, max_terms, min_digits, max_digits)
    config = dict(min_terms=min_terms, max_terms=max_terms, min_digits=min_digits, max_digits=max_digits)
    draws = max(3 * n, 100)
    tasks, seen = [], set()
    for item in reasoning_gym.create_dataset(generator, size=draws, seed=seed, **config):
        if item["question"] in seen:
            continue
        seen.add(item["question"])
        expression = item["metadata"]["expression"]
        tasks.append(make_task(
            id=f"toy_math/{len(tasks)}", domain="math", source="toy_math", prompt=item["question"],
            answer=str(item["answer"]), solution=f"{expression} = {item['answer']}", shards=shards_of(expression),
            metadata={"generator": generator, "expression": expression, **config,
                      "num_terms": item["metadata"]["num_terms"], "num_digits": item["metadata"]["num_digits"]}))
        if len(tasks) == n:
            return tasks
    raise TaskError(f"tasks.math: only {len(tasks)} distinct problems came out of {draws} draws at this "
                    f"difficulty ({config}), but {n} were asked for; raise math_max_terms/math_max_digits "
                    f"or lower n_train/n_eval")
