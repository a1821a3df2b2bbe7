"""Where a built base loses the thread after feedback in code: its calibration dialogues on the dev code tasks
(the settings file's teacher and dialogue, as notebook 02 runs them), with the turns after feedback counted as
well formed by task family and by student turn, and how many write a program of another family
(``calibration.after_feedback_by_kind``).

Run: OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/after_feedback.py SETTINGS OUT_ROOT [N_TASKS [N_EXAMPLES]]
(OUT_ROOT holds data/tasks and models/base_student, as notebooks 01 and 02 write them, e.g. runs/world/c11;
N_EXAMPLES: also print that many turns after feedback that do not load, each after the teacher reply it answers)
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
failing = [(r["messages"][i - 1]["content"], r["messages"][i]["content"]) for r in data
           for i, ok in zip([i for i, m in enumerate(r["messages"]) if m["role"] == "assistant"][1:], r["well_formed"][1:])
           if not ok]
no_program = sum("```" not in text or "def " not in text for _, text in failing)
print(f"turns after feedback that do not load: {len(failing)}, of which {no_program} have no fenced def")
for teacher_reply, text in failing[:int(sys.argv[4]) if len(sys.argv) > 4 else 0]:
    print("teacher:", teacher_reply.replace("\n", " | ")[:200], "\nstudent:", text.replace("\n", " | ")[:200], "\n")
