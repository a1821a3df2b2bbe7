"""Optional extras (``pip install -e '.[vllm]'``): never needed by the embedded default or the tests, so they
are imported only where used, and their absence is reported by name before any heavy work starts."""

from __future__ import annotations

import importlib
import importlib.util


def missing(module: str, extra: str, what: str) -> str | None:
    """Why ``what`` cannot run here (``module`` is not installed), or None when it can."""
    if importlib.util.find_spec(module) is None:
        return (f"{what} needs the optional extra {extra!r}: pip install -e '.[{extra}]' "
                f"(module {module!r} is not installed)")
    return None


def require(module: str, extra: str, what: str):
    """Import ``module``, or raise ImportError naming the extra that provides it."""
    if problem := missing(module, extra, what):
        raise ImportError(problem)
    return importlib.import_module(module)
