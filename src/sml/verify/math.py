"""Math verifier: pull the final answer out of free text and compare it with the gold answer.

Numbers (integers, decimals, fractions, ``\\frac{a}{b}``, thousands separators) are compared exactly
with ``fractions.Fraction``; anything else (expressions, radicals) falls back to ``math-verify``.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction
from functools import lru_cache

from math_verify import parse as mv_parse
from math_verify import verify as mv_verify

_NUMBER = r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*-?\d+(?:\.\d+)?)?|-?\.\d+"
_FRAC = r"-?\\d?frac\{\s*-?[\d.]+\s*\}\{\s*-?[\d.]+\s*\}"
ANY_NUMBER = re.compile(f"{_FRAC}|{_NUMBER}")
_MARKER = re.compile(r"(?:final answer|answer)\s*(?:is|:|=)?\s*", re.IGNORECASE)


def _boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), with nested braces."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[i:j - 1].strip() if depth == 0 else None


def extract_answer(text: str) -> str | None:
    """The final answer in ``text``: the last ``\\boxed{}``, else the first number after the last
    "answer is/:", else the last number anywhere; ``None`` when there is none."""
    text = text.replace("\u2212", "-")
    boxed = _boxed(text)
    if boxed is not None:
        return boxed
    markers = list(_MARKER.finditer(text))
    if markers:
        after = ANY_NUMBER.search(text, markers[-1].end())
        if after:
            return after.group(0)
    numbers = ANY_NUMBER.findall(text)
    return numbers[-1] if numbers else None


@lru_cache(maxsize=1 << 16)  # the leak audit reads the same few numbers in thousands of messages
def parse_number(text: str) -> Fraction | None:
    """An exact number from ``3``, ``-1.5``, ``1,234``, ``3/4``, ``\\frac{3}{4}``, ``$5``; else ``None``."""
    s = text.strip().strip("$").replace("\\!", "").replace("\\,", "").replace(" ", "").rstrip(".")
    s = re.sub(r"\\text\{[^}]*\}$", "", s)
    frac = re.fullmatch(r"(-?)\\d?frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}", s)
    if frac:
        s = f"{frac.group(1)}{frac.group(2)}/{frac.group(3)}"
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    if "/" in s:
        num, _, den = s.partition("/")
        a, b = parse_number(num), parse_number(den)
        return a / b if a is not None and b not in (None, 0) else None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def is_equivalent(predicted: str, gold: str) -> bool:
    """Whether two final answers agree (exactly for numbers, symbolically otherwise)."""
    p, g = parse_number(predicted), parse_number(gold)
    if p is not None and g is not None:
        return p == g or ("." in predicted and abs(p - g) <= Fraction(1, 10**6) * max(1, abs(g)))
    if p is None and g is None and predicted.strip() == gold.strip():
        return True
    # math-verify's timeouts use signals, which only work in the main thread
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        return bool(mv_verify(mv_parse(f"${gold}$", parsing_timeout=timeout),
                              mv_parse(f"${predicted}$", parsing_timeout=timeout), timeout_seconds=timeout))
    except Exception:  # an unparsable answer is simply not equivalent
        return False


def verify(task: dict, reply: str) -> dict:
    """Check a student's reply to a math task: ``{"extracted", "passed"}``."""
    extracted = extract_answer(reply)
    return {"extracted": extracted, "passed": extracted is not None and is_equivalent(extracted, task["answer"])}
