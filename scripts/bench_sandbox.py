"""Sandboxed test runs per second: ``sandbox.run`` vs ``sandbox.Pool`` in the same process (not a test).

The parent imports torch and holds a ~200 MB tensor, like the pipeline, since spawning from a big process
is part of what ``sandbox.run`` costs. Usage: PYTHONPATH=src python scripts/bench_sandbox.py [--n 100]
"""
import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from sml import sandbox
from sml.verify.code import run_tests

CODE = "def f(x):\n    return 2 * x + 1\n"
TESTS = [f"assert f({i}) == {2 * i + 1}" for i in range(5)]


def timed(n: int, threads: int, runner) -> tuple[float, list]:
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        reports = list(pool.map(lambda _: run_tests(CODE, TESTS, runner=runner), range(n)))
    return time.perf_counter() - start, reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="sequential calls; the threaded run makes 2n")
    n = parser.parse_args().n
    ballast = torch.ones(50_000_000)  # 200 MB in the parent
    assert sandbox.isolation_mode() == "bwrap", "the pool only differs from sandbox.run with bubblewrap"
    for threads, calls, workers in ((1, n, 1), (2, 2 * n, 2)):
        with sandbox.Pool(workers) as pool:
            pool.run("pass")  # start the workers outside the timing
            pool.run("pass")
            t_run, direct = timed(calls, threads, sandbox.run)
            t_pool, pooled = timed(calls, threads, pool.run)
        assert all(r["passed"] for r in direct + pooled) and direct == pooled
        print(f"{calls} run_tests calls ({len(TESTS)} tests each) from {threads} thread(s): "
              f"sandbox.run {t_run / calls * 1000:.1f} ms/call, Pool({workers}) {t_pool / calls * 1000:.1f} ms/call, "
              f"speedup x{t_run / t_pool:.1f}")
    del ballast


if __name__ == "__main__":
    main()
