"""Run the DVC pipeline's stale stages several at a time, each pinned to one core, then record them with `dvc commit`.

`dvc repro` runs one stage at a time, and a stage given two threads on this 2-core CPU runs its tiny model less
than twice as fast as one thread does (benchmarks/threads.py). Independent stages (domains x seeds, conditions)
pinned one per core use both cores fully. A stage pinned to one core sees one core, so it takes one torch thread
and one evaluation worker (sml.settings.cores). The result is what `dvc repro` would record: each stage's outputs
are removed before it runs, as `dvc repro` does, and `dvc commit` stores its hashes in dvc.lock once it succeeds.

    PYTHONPATH=src python scripts/repro_parallel.py [TARGET ...] [--jobs 2] [--force] [--dry]

Per-stage wall times go to runs/repro/times.csv and each stage's output to runs/repro/<stage>.log.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sml.settings import cores


def plan(targets: list[str], force: bool) -> tuple[dict, dict]:
    """Stages to run under ``targets`` (all when empty), dependencies first -> their commands and outputs, and
    each one's stages to wait for."""
    from dvc.repo import Repo

    repo = Repo(".")
    graph = repo.index.graph  # edges point from a stage to the stages it depends on
    chosen = set()
    for target in targets or [s.addressing for s in repo.index.stages]:
        chosen.update(repo.stage.collect(target, with_deps=True))
    stale: list = []
    with repo.lock:
        for stage in reversed(_topological(graph, chosen)):  # dependencies first
            upstream = [d for d in graph.successors(stage) if d in chosen]
            if stage.cmd and (force or any(d in stale for d in upstream) or stage.status()):
                stale.append(stage)
    commands = {s.addressing: (s.cmd, [o.fs_path for o in s.outs]) for s in stale}
    waits = {s.addressing: {d.addressing for d in graph.successors(s) if d in stale} for s in stale}
    return commands, waits


def _topological(graph, chosen):
    import networkx as nx

    return [s for s in nx.topological_sort(graph) if s in chosen]


def run(commands: dict, waits: dict, jobs: int, log_dir: Path) -> int:
    """Run every stage once its dependencies have succeeded, ``jobs`` at a time on cores of their own. A stage
    that is the only one able to run (nothing else running or ready) gets all ``jobs`` cores."""
    log_dir.mkdir(parents=True, exist_ok=True)
    free = sorted(os.sched_getaffinity(0))[:jobs]
    running: dict[str, tuple[subprocess.Popen, list[int], float]] = {}
    done: set[str] = set()
    failed: list[str] = []
    pending = list(commands)
    while pending or running:
        ready = [n for n in pending if waits[n] <= done]
        for name in ready:
            if not free or failed:
                break
            pending.remove(name)
            cores_given = free[:] if len(ready) == 1 and not running else [free[0]]
            free = [c for c in free if c not in cores_given]
            cmd, outs = commands[name]
            for out in map(Path, outs):  # as dvc repro does: nothing from an earlier run is resumed or mixed in
                if out.is_dir():
                    shutil.rmtree(out)
                else:
                    out.unlink(missing_ok=True)
            env = {**os.environ, "OMP_NUM_THREADS": str(len(cores_given))}
            pinned = ",".join(map(str, cores_given))
            with (log_dir / f"{name}.log").open("w") as log:  # the stage writes to its own copy of the file
                proc = subprocess.Popen(["taskset", "-c", pinned, "bash", "-c", cmd], stdout=log,
                                        stderr=subprocess.STDOUT, env=env)
            running[name] = (proc, cores_given, time.time())
            print(f"{time.strftime('%H:%M:%S')} start {name} on core(s) {pinned}", flush=True)
        time.sleep(2)
        for name, (proc, cores_held, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            free = sorted(free + cores_held)
            seconds = time.time() - start
            if proc.returncode == 0 and subprocess.run(["dvc", "commit", "-f", "-q", name]).returncode == 0:
                done.add(name)
                with (log_dir / "times.csv").open("a") as times:
                    times.write(f"{name},{seconds:.0f}\n")
                print(f"{time.strftime('%H:%M:%S')} done  {name} in {seconds:.0f} s", flush=True)
            else:
                failed.append(name)
                print(f"{time.strftime('%H:%M:%S')} FAILED {name} (rc {proc.returncode}): {log_dir / name}.log",
                      flush=True)
        if failed and not running:
            break
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="stages to bring up to date, with their dependencies (default: all)")
    parser.add_argument("--jobs", type=int, default=cores(), help="stages at a time, one core each (default: cores)")
    parser.add_argument("--force", action="store_true", help="rerun every stage under the targets")
    parser.add_argument("--dry", action="store_true", help="list the stages that would run, and stop")
    parser.add_argument("--log-dir", type=Path, default=Path("runs/repro"))
    args = parser.parse_args()
    if not 1 <= args.jobs <= cores():
        parser.error(f"--jobs must be between 1 and the {cores()} cores this process may use, not {args.jobs}")
    commands, waits = plan(args.targets, args.force)
    if args.dry or not commands:
        print("\n".join(commands) or "Everything is up to date.")
        return 0
    start = time.time()
    status = run(commands, waits, args.jobs, args.log_dir)
    print(f"{len(commands)} stages, {(time.time() - start) / 60:.1f} min, {args.jobs} at a time")
    return status


if __name__ == "__main__":
    sys.exit(main())
