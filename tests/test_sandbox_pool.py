"""sandbox.Pool beyond the hostile programs of test_sandbox.py (which run against it too): workers
that die, hang or answer garbage are replaced, concurrent callers get their own results, nothing a
program leaves behind reaches the next one, and the verifier and the engine's Judge give the same
answers through it."""

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sml import sandbox
from sml.dialogue.environment import Dialogue, Judge
from sml.verify import code as code_verifier

pytestmark = pytest.mark.usefixtures("strong_sandbox")


@pytest.fixture
def pool():
    with sandbox.Pool(1) as pool:
        yield pool


def monitor_pid(pool):
    """Host pid of the (only) worker's bwrap monitor."""
    return pool._workers[0].proc.pid


def server_pid(pool):
    """Host pid of the fork server, the monitor's only child (PID 1 in its namespace)."""
    pid = monitor_pid(pool)
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return int(f.read().split()[0])


def wait_gone(pid):
    """Until ``pid`` has exited (a zombie counts: it waits for us to reap it)."""
    for _ in range(100):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in "ZX":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} is still alive")


def test_a_worker_killed_between_programs_is_replaced(pool):
    assert pool.run("print(1)")["stdout"] == "1\n"
    old = monitor_pid(pool)
    os.kill(server_pid(pool), signal.SIGKILL)
    wait_gone(old)
    assert pool.run("print(2)")["stdout"] == "2\n"
    assert monitor_pid(pool) != old


def test_a_worker_killed_during_a_program_gives_an_error_then_is_replaced(pool):
    pool.run("pass")
    server = server_pid(pool)
    results = []
    sleeper = "import time; time.sleep(30)"
    thread = threading.Thread(target=lambda: results.append(pool.run(sleeper, timeout_s=20)))
    thread.start()
    for _ in range(100):  # until the program has been forked
        with open(f"/proc/{server}/task/{server}/children") as f:
            if f.read().strip():
                break
        time.sleep(0.05)
    os.kill(server, signal.SIGKILL)
    thread.join()
    assert results[0]["status"] == "error" and "worker" in results[0]["stderr"]
    assert pool.run("print('back')")["stdout"] == "back\n"


def test_a_hung_worker_times_out_and_is_replaced(pool, monkeypatch):
    monkeypatch.setattr(sandbox, "WORKER_MARGIN_S", 0.5)
    pool.run("pass")
    old, server = monitor_pid(pool), server_pid(pool)
    os.kill(server, signal.SIGSTOP)
    result = pool.run("print(1)", timeout_s=0.5)
    assert result["status"] == "timeout" and "did not answer" in result["stderr"]
    wait_gone(server)
    assert pool.run("print(2)")["stdout"] == "2\n" and monitor_pid(pool) != old


def test_a_worker_answering_garbage_gives_an_error(monkeypatch):
    monkeypatch.setattr(sandbox, "_WORKER", "import sys\nfor line in sys.stdin: print('garbage', flush=True)")
    with sandbox.Pool(1) as pool:
        result = pool.run("print(1)")
        assert result["status"] == "error" and "worker" in result["stderr"]
        assert pool.run("print(1)")["status"] == "error"  # a new worker, still garbage, still no exception


def test_concurrent_callers_get_their_own_results():
    with sandbox.Pool(2) as pool:
        def one(i):
            return pool.run(f"import sys\nprint({i} * {i})\nprint(input(), file=sys.stderr)", stdin=f"job {i}\n")
        with ThreadPoolExecutor(8) as threads:
            results = list(threads.map(one, range(64)))
    assert [r["stdout"] for r in results] == [f"{i * i}\n" for i in range(64)]
    assert [r["stderr"] for r in results] == [f"job {i}\n" for i in range(64)]
    assert all(r["status"] == "ok" and r["mode"] == "bwrap" for r in results)


def test_files_left_behind_are_wiped_before_the_next_program(pool):
    first = pool.run("import os\nfor p in ('/tmp/left', '/dev/shm/left', 'here'):\n    open(p, 'w').write('x')\n"
                     "print(os.getcwd())")
    assert first["status"] == "ok"
    old = monitor_pid(pool)
    paths = ("/tmp/left", "/dev/shm/left", os.path.join(first["stdout"].strip(), "here"))
    assert pool.run(f"import os\nprint([p for p in {paths!r} if os.path.exists(p)])")["stdout"] == "[]\n"
    assert monitor_pid(pool) == old  # cleaned, not replaced


def test_a_changed_dev_or_ipc_object_retires_the_worker(pool):
    changes = ["import os\nopen('/dev/left', 'w').write('x')",
               "import os\nos.unlink('/dev/stdin')\nos.symlink('/tmp/left', '/dev/stdin')",
               "import ctypes\nassert ctypes.CDLL(None).shmget(0, 4096, 0o1600) >= 0"]  # IPC_PRIVATE, IPC_CREAT
    check = ("import os\nprint(os.path.exists('/dev/left'), os.readlink('/dev/stdin'),"
             " len(open('/proc/sysvipc/shm').readlines()))")
    for change in changes:
        pool.run("pass")
        old = monitor_pid(pool)
        assert pool.run(change)["status"] == "ok"
        assert pool.run(check)["stdout"] == "False /proc/self/fd/0 1\n"
        assert monitor_pid(pool) != old


def test_a_worker_that_cannot_clean_up_retires(pool):
    pool.run("pass")
    old = monitor_pid(pool)
    assert pool.run("import os\nos.makedirs('/tmp/d/e')\nos.chmod('/tmp/d', 0)")["status"] == "ok"
    assert pool.run("import os; print(os.listdir('/tmp'))")["stdout"].startswith("['job")
    assert monitor_pid(pool) != old


def test_random_state_differs_between_programs(pool):
    draws = {pool.run("import random; print(random.random())")["stdout"] for _ in range(3)}
    assert len(draws) == 3


def test_workers_started_from_a_finished_thread_survive(pool):
    thread = threading.Thread(target=pool.run, args=("pass",))
    thread.start()
    thread.join()
    time.sleep(0.3)
    old = monitor_pid(pool)
    assert pool.run("print('same worker')")["stdout"] == "same worker\n" and monitor_pid(pool) == old


def test_close_kills_the_workers_and_refuses_new_programs():
    pool = sandbox.Pool(2)
    with ThreadPoolExecutor(2) as threads:
        list(threads.map(lambda _: pool.run("import time; time.sleep(0.3)"), range(2)))
    pids = [w.proc.pid for w in pool._workers]
    pool.close()
    for pid in pids:
        wait_gone(pid)
    with pytest.raises(RuntimeError, match="closed"):
        pool.run("print(1)")


TESTS = ["assert f(1) == 3", "assert f(2) == 5", "assert f(-1) == -1"]


@pytest.mark.parametrize("candidate", [
    "def f(x):\n    return 2 * x + 1",  # passes
    "def f(x):\n    return 2 * x",  # fails every test
    "def f(x):\n    if x < 0:\n        import os; os._exit(4)\n    return 2 * x + 1",  # crashes on a test
    "import sys\nsys.stderr.write('bye')\nimport os\nos._exit(3)",  # crashes at load
    "def f(x) return x",  # syntax error
])
def test_run_tests_gives_the_same_report_through_a_pool(pool, candidate):
    direct = code_verifier.run_tests(candidate, TESTS)
    pooled = code_verifier.run_tests(candidate, TESTS, runner=pool.run)
    assert pooled == direct


def test_judge_checks_code_through_its_pool_across_calls():
    task = {"id": "double", "domain": "code", "tests": TESTS, "test_setup": "", "entry_point": "f"}
    replies = ["```python\ndef f(x):\n    return 2 * x + 1\n```", "```python\ndef f(x):\n    return x\n```"]
    judge = Judge(workers=2)
    assert judge.pool is None
    for _ in range(2):  # the second call needs workers that outlived the first call's threads
        dialogues = [Dialogue(task=task, variant="full", sample=k, messages=[], ids=[]) for k in range(2)]
        checks = judge.checks(dialogues, replies, ["attempt", "attempt"])
        assert [c["passed"] for c in checks] == [True, False]
        judge.cache.clear()
    assert judge.pool is not None
    assert checks[1]["results"][0] == {"test": TESTS[0], "passed": False, "actual": "1", "expected": "3"}
    judge.pool.close()


def test_programs_cannot_reach_into_the_fork_server(pool):
    paths = ("/proc/1/fd", "/proc/1/mem", "/proc/1/environ", "/proc/1/fd/0", "/proc/1/fd/3")
    code = (f"import os\nfor p in {paths!r}:\n"
            "    try:\n        os.listdir(p) if p.endswith('fd') else open(p, 'rb').read(1)\n"
            "        print('opened', p)\n    except OSError:\n        pass\nprint('done')")
    assert pool.run(code)["stdout"] == "done\n"
