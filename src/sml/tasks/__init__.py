"""Tasks: static problems plus the teacher's private knowledge, one schema for every source."""

from .build import build, load_tasks
from .schema import DOMAINS, FEATURES, VARIANTS, TaskError, make_task, metadata, prompt_for, validate_task

__all__ = ["DOMAINS", "VARIANTS", "FEATURES", "TaskError", "build", "load_tasks", "make_task", "metadata", "prompt_for", "validate_task"]
