"""Verifiers: is a student's reply correct, and what exactly is wrong with it (the teacher's private view)."""

from . import code, math


def verify(task: dict, reply: str) -> dict:
    """Domain dispatch; the result always has ``passed``."""
    return (math if task["domain"] == "math" else code).verify(task, reply)
