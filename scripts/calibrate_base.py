"""Calibrate an already pretrained base student on the dev split, under the teacher and dialogue settings of a
settings file: the same numbers notebook 02 writes into metrics/base_student.json, without pretraining again
(how a teacher-side world variant, e.g. teacher.restate, is checked on the same base).

Run: OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/calibrate_base.py SETTINGS OUT_ROOT [OUT_JSON]
(OUT_ROOT holds data/tasks and models/base_student, as notebooks 01 and 02 write them)
"""
import json
import sys
import time
from pathlib import Path

import torch

from sml import settings
from sml.dialogue.llm_teacher import make_teacher
from sml.dialogue.student import Student, load_tokenizer
from sml.evaluation import calibration
from sml.tasks.build import load_tasks
from transformers import AutoModelForCausalLM

torch.set_num_threads(1)
cfg = settings.load(sys.argv[1])
out = Path(sys.argv[2])
model_dir = out / "models" / "base_student"
student = Student(AutoModelForCausalLM.from_pretrained(model_dir).eval(), load_tokenizer(str(model_dir)))
teacher = make_teacher(cfg.teacher, out)
scores, start = {}, time.time()
for domain, source in (("math", "toy_math"), ("code", "toy_code")):
    found, _ = calibration.calibrate(student, teacher, load_tasks(out / "data" / "tasks", source, "dev"), cfg.dialogue,
                                     workers=settings.worker_count(cfg.machine),
                                     domain=domain, seed=cfg.base_student.seed, progress=False)
    scores.update(found)
    print(calibration.summary(found, domain))
scores["calibration_minutes"] = round((time.time() - start) / 60, 2)
if len(sys.argv) > 3:
    Path(sys.argv[3]).write_text(json.dumps(scores, indent=2) + "\n")
