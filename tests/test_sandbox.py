"""Hostile programs: each returns a result within its timeout and leaves the machine untouched.

Every test that takes a ``runner`` runs twice: with ``sandbox.run`` and with a ``sandbox.Pool``'s ``run``.
Run sequentially, the pool always uses its most recently used worker, so "the next program" below runs
in the same worker as the hostile one.
"""

import os
import subprocess
import time
from pathlib import Path

import pytest

from sml import sandbox

REPO = Path(__file__).resolve().parents[1]
SLACK_S = 3.0  # start-up and teardown on a busy 2-core machine


@pytest.fixture(scope="module")
def pool():
    with sandbox.Pool(2) as pool:
        yield pool


@pytest.fixture(params=["run", "pool"])
def runner(request):
    return sandbox.run if request.param == "run" else request.getfixturevalue("pool").run


def run_timed(runner, code, timeout_s=3.0, **kw):
    start = time.monotonic()
    result = runner(code, timeout_s=timeout_s, **kw)
    assert time.monotonic() - start < timeout_s + SLACK_S
    assert result["status"] in {"ok", "error", "timeout", "memory"}
    return result


def worker_pids(*pools):
    """Host pids of the pools' workers: their bwrap monitors."""
    return {w.proc.pid for p in pools for w in p._workers if w.proc is not None}


def sandbox_processes(*pools):
    """Live processes of the sandbox user, except the given pools' workers (a bwrap monitor and its child,
    the fork server). Killed ones may linger a moment as zombies until reaped."""
    workers = worker_pids(*pools)
    out = subprocess.run(["ps", "-eo", "user=,pid=,ppid=,stat=,comm="], capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines()]
    return [row for row in rows if row[0] in ("nobody", "65534") and not row[3].startswith("Z")
            and int(row[1]) not in workers and int(row[2]) not in workers]


STRAYS = "import os\nprint(sorted({int(p) for p in os.listdir('/proc') if p.isdigit()} - {1, os.getpid()}))"


def test_contract_fields(runner):
    result = runner("print('hello')")
    assert result["status"] == "ok" and result["stdout"] == "hello\n" and result["stderr"] == ""
    assert {"status", "stdout", "stderr", "returncode", "duration_s", "mode"} <= set(result)


def test_error_and_exit_code(runner):
    assert run_timed(runner, "raise ValueError('boom')")["status"] == "error"
    assert run_timed(runner, "import sys; sys.exit(3)")["returncode"] == 3
    assert run_timed(runner, "import os; os._exit(3)")["returncode"] == 3
    result = run_timed(runner, "import sys; sys.exit('bye')")
    assert result["returncode"] == 1 and result["stderr"] == "bye\n"


def test_stdin_is_passed(runner):
    assert runner("print(input()[::-1])", stdin="abc\n")["stdout"] == "cba\n"


def test_infinite_loop_times_out(runner):
    assert run_timed(runner, "while True: pass", timeout_s=1.5)["status"] == "timeout"


def test_sleeping_program_times_out(runner):
    assert run_timed(runner, "import time; time.sleep(60)", timeout_s=1.0)["status"] == "timeout"


def test_memory_bomb(strong_sandbox, runner):
    result = run_timed(runner, "x = []\nwhile True: x.append(bytearray(50 << 20))", memory_mb=256)
    assert result["status"] == "memory"


def test_fork_bomb_is_contained(strong_sandbox, runner, pool):
    code = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass"
    result = run_timed(runner, code, timeout_s=2.0)
    assert result["status"] in {"timeout", "error"}
    time.sleep(0.5)
    assert sandbox_processes(pool) == []
    assert runner(STRAYS)["stdout"] == "[]\n"


@pytest.mark.parametrize("escape", ["subprocess.Popen(['sleep', '30'])",
                                    "subprocess.Popen(['sleep', '30'], start_new_session=True)",
                                    "subprocess.Popen(['sh', '-c', 'setsid sleep 30 & sleep 30 &'])"])
def test_no_process_left_behind(strong_sandbox, runner, pool, escape):
    code = f"import subprocess, time\n{escape}\ntime.sleep(0.2)\nprint('started')"
    assert run_timed(runner, code)["stdout"] == "started\n"
    time.sleep(0.3)
    assert sandbox_processes(pool) == []
    assert runner(STRAYS)["stdout"] == "[]\n"  # the next program (in the pool: same worker) sees none


def test_cannot_write_outside_its_temp_dir(strong_sandbox, runner, tmp_path):
    target = tmp_path / "pwned.txt"
    tmp_path.chmod(0o777)  # even a world-writable folder is read-only to the program
    repo_target = REPO / "pwned.txt"
    code = (f"for p in [{str(target)!r}, {str(repo_target)!r}, '/etc/pwned']:\n"
            "    try:\n        open(p, 'w').write('x')\n        print('wrote', p)\n"
            "    except OSError as e:\n        print('refused', p)\n"
            "open('inside.txt', 'w').write('fine')\nprint('inside ok')")
    result = run_timed(runner, code)
    assert "wrote" not in result["stdout"] and "inside ok" in result["stdout"]
    assert not target.exists() and not repo_target.exists() and not Path("/etc/pwned").exists()


def test_cannot_delete_repository_files(strong_sandbox, runner):
    victim = REPO / "pyproject.toml"
    before = victim.read_bytes()
    run_timed(runner, f"import os, shutil\nos.remove({str(victim)!r})\nshutil.rmtree({str(REPO / 'src')!r})")
    assert victim.read_bytes() == before and (REPO / "src" / "sml" / "sandbox" / "__init__.py").exists()


def test_no_network(strong_sandbox, runner):
    code = ("import socket\ns = socket.socket()\ns.settimeout(1)\n"
            "try:\n    s.connect(('127.0.0.1', 22)); print('connected')\nexcept OSError as e:\n    print('blocked', e)")
    assert "blocked" in run_timed(runner, code)["stdout"]


def test_cannot_kill_the_parent(strong_sandbox, runner, pool):
    workers = worker_pids(pool)
    code = ("import os, signal\nfor pid in (os.getppid(), 1, -1):\n"
            "    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGSTOP, signal.SIGKILL):\n"
            "        try: os.kill(pid, sig)\n        except OSError: pass\nprint('tried')")
    run_timed(runner, code)
    assert os.getpid() > 0  # we are still here; the next run (in the pool: same worker) still works
    assert runner("print('alive')")["stdout"] == "alive\n"
    assert worker_pids(pool) == workers  # no worker was replaced


def test_environment_is_cleared(strong_sandbox, runner, monkeypatch):
    monkeypatch.setenv("SML_SECRET_TOKEN", "hunter2")
    assert "hunter2" not in runner("import os; print(dict(os.environ))")["stdout"]


def test_output_flood_is_capped(runner):
    result = run_timed(runner, "while True: print('x' * 1000)", timeout_s=2.0)
    assert len(result["stdout"]) <= sandbox.OUTPUT_LIMIT_BYTES
    assert result["status"] in {"timeout", "error"}


def test_other_fds_cannot_corrupt_the_next_result(runner):
    code = ("import os\nfor fd in range(3, 21):\n"
            "    for action in (lambda: os.write(fd, b'{\"returncode\": 0}\\n'), lambda: os.close(fd)):\n"
            "        try: action(); print('touched', fd)\n        except OSError: pass\n"
            "for fd in range(21):\n"  # the pool's fork server is PID 1: its fds, the control pipes among them
            "    try: open(f'/proc/1/fd/{fd}', 'w').write('garbage\\n'); print('wrote', fd)\n    except OSError: pass\n"
            "print('done')")
    result = run_timed(runner, code)
    assert result["stdout"].endswith("done\n") and result["status"] == "ok"
    assert runner("print(6 * 7)")["stdout"] == "42\n"


def test_bad_arguments_raise_clear_errors(runner):
    with pytest.raises(ValueError, match="timeout_s"):
        runner("print(1)", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        runner("print(1)", memory_mb=1)
    with pytest.raises(TypeError, match="code"):
        runner(b"print(1)")
    with pytest.raises(ValueError, match="plain file names"):
        runner("print(1)", files={"../escape.txt": "x"})


def test_extra_files_are_readable(runner):
    assert runner("print(open('data.txt').read())", files={"data.txt": "42"})["stdout"] == "42\n"


def test_weak_mode_warns_loudly(monkeypatch, runner):
    monkeypatch.setenv("SML_SANDBOX_MODE", "rlimits")
    sandbox.isolation_mode.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="WEAK"):
            assert sandbox.isolation_mode() == "rlimits"
        result = runner("print(6 * 7)")  # the pool falls back to sandbox.run
        assert result["stdout"] == "42\n" and result["mode"] == "rlimits"
        assert run_timed(runner, "while True: pass", timeout_s=1.0)["status"] == "timeout"
    finally:
        monkeypatch.delenv("SML_SANDBOX_MODE")
        sandbox.isolation_mode.cache_clear()
