"""Math toy world: multi-step arithmetic from reasoning-gym, with an underspecified (sharded) variant."""

from __future__ import annotations

import ast
from fractions import Fraction

from .schema import TaskError, make_task

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def format_number(value: Fraction) -> str:
    """``Fraction(6)`` -> ``6``, ``Fraction(1, 2)`` -> ``1/2``."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def steps_of(expression: str) -> list[dict]:
    """The operations of an expression in evaluation order: ``words`` (how a shard states the step,
    naming earlier results as "the result of step k"), ``equation`` (the step worked out with numbers,
    as a student writes it: ``-2 + -4 = -6``) and ``value``."""
    steps: list[dict] = []

    def walk(node: ast.AST) -> tuple[str, Fraction]:
        if isinstance(node, ast.Constant):
            return str(node.value), Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            if isinstance(node.operand, ast.Constant):
                return f"-{node.operand.value}", -Fraction(node.operand.value)
            inner, value = walk(node.operand)
            words, equation, value = f"negate {inner}", f"-({format_number(value)}) = {format_number(-value)}", -value
        elif isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            (left, a), (right, b) = walk(node.left), walk(node.right)
            op = _OPS[type(node.op)]
            value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else Fraction(0)}[op]
            words, equation = f"compute {left} {op} {right}", f"{format_number(a)} {op} {format_number(b)} = {format_number(value)}"
        else:
            raise TaskError(f"cannot shard expression {expression!r}: unsupported {ast.dump(node)}")
        steps.append({"words": words, "equation": equation, "value": value})
        return f"the result of step {len(steps)}", value

    walk(ast.parse(expression, mode="eval").body)
    return steps


def shards_of(expression: str) -> list[str]:
    """Split an expression into an intent plus one shard per operation, in evaluation order."""
    steps = steps_of(expression)
    if not steps:
        return []
    intent = (f"I need the value of an arithmetic expression that is built in {len(steps)} "
              f"step{'s' if len(steps) > 1 else ''}. The answer is the result of the last step.")
    return [intent] + [f"Step {i}: {s['words']}." for i, s in enumerate(steps, 1)]


def worked_solution(expression: str, answer: str) -> str:
    """The answer as the student learns to write it: one equation per step, then the final answer."""
    return "".join(f"{s['equation']}\n" for s in steps_of(expression)) + f"The answer is {answer}."


def generate(n: int, seed: int, generator: str = "basic_arithmetic", min_terms: int = 2, max_terms: int = 3,
             min_digits: int = 1, max_digits: int = 2) -> list[dict]:
    """``n`` distinct arithmetic tasks (distinct prompts), deterministic in ``seed``."""
    import reasoning_gym  # here, not at the top: it costs ~0.4 s of every stage's start-up, and only 01 generates

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
            answer=str(item["answer"]), solution=worked_solution(expression, str(item["answer"])), shards=shards_of(expression),
            metadata={"generator": generator, "expression": expression, **config,
                      "num_terms": item["metadata"]["num_terms"], "num_digits": item["metadata"]["num_digits"]}))
        if len(tasks) == n:
            return tasks
    raise TaskError(f"tasks.math: only {len(tasks)} distinct problems came out of {draws} draws at this "
                    f"difficulty ({config}), but {n} were asked for; raise math_max_terms/math_max_digits "
                    f"or lower n_train/n_eval")
