"""One world attempt (issue 21): notebooks 01 (tasks) and 02 (base student: pretraining, then calibration on the
dev split) under a settings file laid over params.yaml, written to their own folder, so that a world variant is
checked against the fixed criteria before any SML is trained on it. The executed notebooks, the base and
metrics/base_student.json land in OUT/NAME (NAME: the settings file's stem).

Run: PYTHONPATH=src python scripts/world_attempt.py profiles/world/c2.yaml [--out runs/world]
(the attempts' settings files are in profiles/world/; each sets machine.threads: 1 and machine.workers: 1, so two can share 2 cores.
A teacher-side variant of a built base is checked with scripts/calibrate_base.py.)
"""
import argparse
import json
import time
from pathlib import Path

import papermill

from sml import settings
from sml.paths import repo_root


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings_file")
    parser.add_argument("--out", default="runs/world", help="folder of the attempts (default: runs/world)")
    args = parser.parse_args(argv)
    settings.load(args.settings_file)  # every problem of the file, before anything runs
    out = Path(args.out) / Path(args.settings_file).stem
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for notebook in ("01_tasks", "02_base_student"):
        papermill.execute_notebook(str(repo_root() / "notebooks" / f"{notebook}.ipynb"), str(out / f"{notebook}.ipynb"),
                                   parameters={"settings_file": str(Path(args.settings_file).resolve()),
                                               "out_root": str(out.resolve())},
                                   cwd=str(repo_root()), progress_bar=False, kernel_name="python3")
    metrics = json.loads((out / "metrics" / "base_student.json").read_text())
    print(f"{out}: {(time.time() - start) / 60:.1f} min wall")
    for key in sorted(k for k in metrics if k.endswith(("_ok_math", "_ok_code")) or k.startswith("feedback_below")):
        print(f"  {key}: {metrics[key]}")
    return metrics


if __name__ == "__main__":
    main()
