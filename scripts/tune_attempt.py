"""One tuning attempt on the dev split (issue 21, items 4 and 5): train one condition's adapter for one domain and
seed with the pipeline's own notebook, under a settings file laid over params.yaml, then measure it on that
domain's dev tasks exactly as the base is calibrated (``calibration.calibrate``: dialogues of up to
``dialogue.eval_turns`` turns and the fresh-retry comparator, the same tasks and seed), with SR@1/4/10 and their
95% Wilson intervals. No evaluation task is read. Condition ``base`` trains nothing: the reference row.

Run: PYTHONPATH=src python scripts/tune_attempt.py SETTINGS CONDITION DOMAIN [--seed 0] [--root .] [--out runs/tune]
CONDITION: base | online_sml | st_rl | offline_sml | st_sft (after offline_sml: it trains on as many examples).
ROOT holds the built world (data/tasks, models/base_student: ``dvc repro base_student``), which OUT/NAME links to;
NAME is the settings file's stem + condition + domain.
Settings files for attempts set machine.threads: 1 and machine.workers: 1, so that two attempts share 2 cores.
"""
import argparse
import json
import time
from pathlib import Path

import papermill

from sml import settings
from sml.dialogue.llm_teacher import make_teacher
from sml.dialogue.remote_student import load_student
from sml.evaluation import calibration
from sml.paths import repo_root
from sml.tasks.build import load_tasks

# condition -> (notebook, extra papermill parameters, folder of its adapters under models/)
TRAINED = {"online_sml": ("05_online_sml", {}, "sml_online"),
           "st_rl": ("06_single_turn_baselines", {"baseline": "rl"}, "st_rl"),
           "offline_sml": ("04_offline_sml", {}, "sml_offline"),
           "st_sft": ("06_single_turn_baselines", {"baseline": "sft"}, "st_sft")}
SOURCE = {"math": "math_source", "code": "code_source"}


def linked_world(root: Path, out: Path) -> None:
    """``out`` reads the built world of ``root`` (its tasks and base) through links, and writes its own outputs."""
    for part in ("data/tasks", "models/base_student"):
        target, link = (root / part).resolve(), out / part
        if not target.exists():
            raise SystemExit(f"--root {root}: {part} not found; build the world first (dvc repro base_student)")
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)


def offline_examples(out: Path, domain: str, seed: int) -> int:
    """What the offline SML attempt beside ``out`` (same settings file) kept: ``st_sft`` trains on as many."""
    twin = out.with_name(out.name.replace("_st_sft_", "_offline_sml_"))
    summary = twin / "data" / "offline" / f"{domain}_s{seed}" / "summary.json"
    if not summary.exists():
        raise SystemExit(f"st_sft matches offline SML's examples, but {summary} is missing: run the offline_sml "
                         "attempt with the same settings file first")
    return json.loads(summary.read_text())["n_examples"]


def sr_at(data, turns=(1, 4, 10)) -> dict:
    """SR@k (solved by student turn k) with 95% Wilson intervals, over the dialogues of ``data``."""
    solved = list(data["solved_turn"])
    return {f"sr{k}": calibration.rate(f"sr{k}", sum(0 < s <= k for s in solved), len(solved)) for k in turns}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings_file")
    parser.add_argument("condition", choices=["base", *TRAINED])
    parser.add_argument("domain", choices=list(SOURCE))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=".", help="folder with the built world (default: this repository)")
    parser.add_argument("--out", default="runs/tune", help="folder of the attempts (default: runs/tune)")
    parser.add_argument("--n-tasks", type=int, default=0, help="the first N dev tasks (default 0: all; a quick check)")
    args = parser.parse_args(argv)
    cfg = settings.load(args.settings_file)  # every problem of the file, before anything runs
    out = Path(args.out) / f"{Path(args.settings_file).stem}_{args.condition}_{args.domain}"
    linked_world(Path(args.root), out)
    start = time.time()
    adapter = None
    if args.condition in TRAINED:
        notebook, extra, folder = TRAINED[args.condition]
        if args.condition == "st_sft":  # as many examples as the offline SML attempt of the same settings kept
            extra = {**extra, "n_examples": offline_examples(out, args.domain, args.seed)}
        papermill.execute_notebook(
            str(repo_root() / "notebooks" / f"{notebook}.ipynb"), str(out / f"{notebook}.ipynb"),
            parameters={"settings_file": str(Path(args.settings_file).resolve()), "out_root": str(out.resolve()),
                        "train_domain": args.domain, "seed": args.seed, **extra},
            cwd=str(repo_root()), progress_bar=False, kernel_name="python3")
        adapter = str(out / "models" / folder / f"{args.domain}_s{args.seed}")
    trained = time.time()
    settings.use_threads(cfg.machine.threads)
    student = load_student(str(out / "models" / "base_student"), adapter, cfg.generation, dtype=cfg.student.dtype)
    tasks = load_tasks(out / "data" / "tasks", getattr(cfg.evaluation, SOURCE[args.domain]), "dev")
    tasks = list(tasks)[:args.n_tasks] if args.n_tasks else tasks
    scores, data = calibration.calibrate(student, make_teacher(cfg.teacher, out), tasks, cfg.dialogue,
                                         domain=args.domain, seed=args.seed, progress=False,
                                         workers=settings.worker_count(cfg.machine))
    result = {"settings_file": args.settings_file, "condition": args.condition, "domain": args.domain,
              "seed": args.seed, "split": "dev", "n_tasks": len(tasks), **sr_at(data), **scores,
              "train_minutes": round((trained - start) / 60, 2),
              "evaluate_minutes": round((time.time() - trained) / 60, 2)}
    (out / "tune.json").write_text(json.dumps(result, indent=2) + "\n")
    d = args.domain
    print(f"{out}: train {result['train_minutes']} min, evaluate {result['evaluate_minutes']} min")
    for k in (1, 4, 10):
        r = result[f"sr{k}"]
        print(f"  SR@{k} {r[f'sr{k}']:.3f} [{r[f'sr{k}_low']:.3f}, {r[f'sr{k}_high']:.3f}]")
    print(f"  after feedback {result[f'solve_rate_after_feedback_{d}']:.3f}, after a fresh retry "
          f"{result[f'solve_rate_after_retry_{d}']:.3f}, well formed after feedback "
          f"{result[f'well_formed_after_feedback_{d}']:.3f}")
    return result


if __name__ == "__main__":
    main()
