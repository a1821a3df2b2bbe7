"""Where a built base loses the thread after feedback in code: its calibration dialogues on the dev code tasks
(the settings file's teacher and dialogue, as notebook 02 runs them), with the turns after feedback counted as
well formed by task family and by student turn, and how many write a program of another family
(``calibration.after_feedback_by_kind``).

Run: OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/after_feedback.py SETTINGS OUT_ROOT [N_TASKS]
(OUT_ROOT holds data/tasks and models/base_student, as notebooks 01 and 02 write them, e.g. runs/world/c11)
"""
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from sml import settings
from sml.dialogue.llm_teacher import make_teacher
from sml.dialogue.student import Student
from sml.evaluation import calibration
from sml.tasks.build import load_tasks

torch.set_num_threads(1)
cfg = settings.load(sys.argv[1])
out = Path(sys.argv[2])
tasks = load_tasks(out / "data" / "tasks", "toy_code", "dev")
if len(sys.argv) > 3:
    tasks = tasks.select(range(min(int(sys.argv[3]), len(tasks))))
student = Student.load(str(out / "models" / "base_student"), dtype="float32")
scores, data = calibration.calibrate(student, make_teacher(cfg.teacher, out), tasks, cfg.dialogue, domain="code",
                                     seed=cfg.base_student.seed, progress=False)
print(calibration.summary(scores, "code"))
by_id = {t["id"]: t for t in tasks}
found = calibration.after_feedback_by_kind(
    SimpleNamespace(task=by_id[r["task_id"]], messages=r["messages"], well_formed=r["well_formed"]) for r in data)
for by, counts in found.items():
    label = "wrote another family's program" if by == "other_family" else f"well formed after feedback, by {by}"
    print(f"{label}: " + ", ".join(f"{k} {a}/{n} ({a / n:.2f})" for k, (a, n) in counts.items()))
