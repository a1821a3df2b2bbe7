"""Hostile programs: each returns a result within its timeout and leaves the machine untouched."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from sml import sandbox

REPO = Path(__file__).resolve().parents[1]
SLACK_S = 3.0  # start-up and teardown on a busy 2-core machine


def run_timed(code, timeout_s=3.0, **kw):
    start = time.monotonic()
    result = sandbox.run(code, timeout_s=timeout_s, **kw)
    assert time.monotonic() - start < timeout_s + SLACK_S
    assert result["status"] in {"ok", "error", "timeout", "memory"}
    return result


def sandbox_processes():
    """Live processes of the sandbox user (killed ones may linger a moment as zombies until reaped)."""
    out = subprocess.run(["ps", "-eo", "user=,pid=,stat=,comm="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if line.split()[0] in ("nobody", "65534") and not line.split()[2].startswith("Z")]


def test_contract_fields():
    result = sandbox.run("print('hello')")
    assert result["status"] == "ok" and result["stdout"] == "hello\n" and result["stderr"] == ""
    assert {"status", "stdout", "stderr", "returncode", "duration_s", "mode"} <= set(result)


def test_error_and_exit_code():
    assert run_timed("raise ValueError('boom')")["status"] == "error"
    assert run_timed("import sys; sys.exit(3)")["returncode"] == 3


def test_stdin_is_passed():
    assert sandbox.run("print(input()[::-1])", stdin="abc\n")["stdout"] == "cba\n"


def test_infinite_loop_times_out():
    assert run_timed("while True: pass", timeout_s=1.5)["status"] == "timeout"


def test_sleeping_program_times_out():
    assert run_timed("import time; time.sleep(60)", timeout_s=1.0)["status"] == "timeout"


def test_memory_bomb(strong_sandbox):
    result = run_timed("x = []\nwhile True: x.append(bytearray(50 << 20))", memory_mb=256)
    assert result["status"] == "memory"


def test_fork_bomb_is_contained(strong_sandbox):
    code = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass"
    result = run_timed(code, timeout_s=2.0)
    assert result["status"] in {"timeout", "error"}
    time.sleep(0.5)
    assert sandbox_processes() == []


def test_no_process_left_behind(strong_sandbox):
    code = "import subprocess\nsubprocess.Popen(['sleep', '30'])\nprint('started')"
    assert run_timed(code)["stdout"] == "started\n"
    time.sleep(0.3)
    assert sandbox_processes() == []


def test_cannot_write_outside_its_temp_dir(strong_sandbox, tmp_path):
    target = tmp_path / "pwned.txt"
    tmp_path.chmod(0o777)  # even a world-writable folder is read-only to the program
    repo_target = REPO / "pwned.txt"
    code = (f"for p in [{str(target)!r}, {str(repo_target)!r}, '/etc/pwned']:\n"
            "    try:\n        open(p, 'w').write('x')\n        print('wrote', p)\n"
            "    except OSError as e:\n        print('refused', p)\n"
            "open('inside.txt', 'w').write('fine')\nprint('inside ok')")
    result = run_timed(code)
    assert "wrote" not in result["stdout"] and "inside ok" in result["stdout"]
    assert not target.exists() and not repo_target.exists() and not Path("/etc/pwned").exists()


def test_cannot_delete_repository_files(strong_sandbox):
    victim = REPO / "pyproject.toml"
    before = victim.read_bytes()
    run_timed(f"import os, shutil\nos.remove({str(victim)!r})\nshutil.rmtree({str(REPO / 'src')!r})")
    assert victim.read_bytes() == before and (REPO / "src" / "sml" / "sandbox.py").exists()


def test_no_network(strong_sandbox):
    code = ("import socket\ns = socket.socket()\ns.settimeout(1)\n"
            "try:\n    s.connect(('127.0.0.1', 22)); print('connected')\nexcept OSError as e:\n    print('blocked', e)")
    assert "blocked" in run_timed(code)["stdout"]


def test_cannot_kill_the_parent(strong_sandbox):
    code = ("import os, signal\nfor pid in (os.getppid(), 1, -1):\n"
            "    try: os.kill(pid, signal.SIGKILL)\n    except OSError: pass\nprint('tried')")
    run_timed(code)
    assert os.getpid() > 0  # we are still here; the next run still works
    assert sandbox.run("print('alive')")["stdout"] == "alive\n"


def test_environment_is_cleared(strong_sandbox, monkeypatch):
    monkeypatch.setenv("SML_SECRET_TOKEN", "hunter2")
    assert "hunter2" not in sandbox.run("import os; print(dict(os.environ))")["stdout"]


def test_output_flood_is_capped():
    result = run_timed("while True: print('x' * 1000)", timeout_s=2.0)
    assert len(result["stdout"]) <= sandbox.OUTPUT_LIMIT_BYTES
    assert result["status"] in {"timeout", "error"}


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="timeout_s"):
        sandbox.run("print(1)", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        sandbox.run("print(1)", memory_mb=1)
    with pytest.raises(TypeError, match="code"):
        sandbox.run(b"print(1)")
    with pytest.raises(ValueError, match="plain file names"):
        sandbox.run("print(1)", files={"../escape.txt": "x"})


def test_extra_files_are_readable():
    assert sandbox.run("print(open('data.txt').read())", files={"data.txt": "42"})["stdout"] == "42\n"


def test_weak_mode_warns_loudly(monkeypatch):
    monkeypatch.setenv("SML_SANDBOX_MODE", "rlimits")
    sandbox.isolation_mode.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="WEAK"):
            assert sandbox.isolation_mode() == "rlimits"
        result = sandbox.run("print(6 * 7)")
        assert result["stdout"] == "42\n" and result["mode"] == "rlimits"
        assert run_timed("while True: pass", timeout_s=1.0)["status"] == "timeout"
    finally:
        monkeypatch.delenv("SML_SANDBOX_MODE")
        sandbox.isolation_mode.cache_clear()
