"""Where a built base fails in code: its one-turn solves on the dev code tasks by family and steps, sampled as the
calibration samples (the settings file's dialogue) and greedy.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/code_by_kind.py SETTINGS OUT_ROOT
(OUT_ROOT holds data/tasks and models/base_student, as notebooks 01 and 02 write them, e.g. runs/world/c7)
"""
import sys
from pathlib import Path

import torch

from sml import settings
from sml.dialogue.engine import run_dialogues
from sml.dialogue.student import Student
from sml.dialogue.teacher import ScriptedTeacher
from sml.evaluation.calibration import solved_by_kind
from sml.tasks.build import load_tasks

torch.set_num_threads(1)
cfg = settings.load(sys.argv[1])
out = Path(sys.argv[2])
student = Student.load(str(out / "models" / "base_student"), dtype="float32")
tasks = list(load_tasks(out / "data" / "tasks", "toy_code", "dev"))
for temperature in (cfg.dialogue.temperature, 0.0):
    dialogue = cfg.dialogue.model_copy(update={"temperature": temperature})
    kinds = solved_by_kind(run_dialogues(tasks, student, ScriptedTeacher(), dialogue, max_turns=1,
                                         seed=cfg.base_student.seed, progress=False))
    total = sum(s for s, _ in kinds.values()) / len(tasks)
    print(f"temperature {temperature}: " + ", ".join(f"{f} {k} step(s) {s}/{n}" for (f, k), (s, n) in kinds.items())
          + f"; all {total:.3f}")
