"""Tasks: static problems plus the teacher's private knowledge, one schema for every source."""

from .build import SOURCES, build, check_params, load_tasks
from .schema import DOMAINS, FEATURES, VARIANTS, TaskError, make_task, metadata, prompt_for, validate_task

__all__ = ["SOURCES", "DOMAINS", "VARIANTS", "FEATURES", "TaskError", "build", "check_params", "load_tasks",
           "make_task", "metadata", "prompt_for", "validate_task"]
