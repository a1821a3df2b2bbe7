"""Run untrusted, model-written Python in a sandbox and always return a result.

Isolation, strongest available first:
- ``bwrap``: bubblewrap (Debian package ``bubblewrap``). The program sees the whole filesystem
  read-only except its own temp dir, has no network, its own PID namespace in which it is PID 1
  (it cannot see or signal anything outside; everything it started dies with it; ``--as-pid-1``
  also keeps bwrap from leaving an unreaped init process behind), a cleared environment, and dies
  with us.
- ``rlimits``: the documented weaker fallback when bubblewrap is missing or unusable. Resource limits
  and a temp working dir only: the filesystem and the network are NOT isolated. A loud warning is
  issued once per process.

In both modes the program runs in its own session/process group, under CPU, address-space,
file-size and process-count limits and a wall-clock timeout; when we run as root it is also dropped
to the ``nobody`` user, which makes the process-count limit effective and keeps it from signalling
our processes. Output is written to files (capped by the file-size limit) rather than pipes, so a
program printing forever cannot exhaust our memory.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings

NOBODY = 65534
OUTPUT_LIMIT_BYTES = 1 << 20  # what we read back of stdout / stderr
FILE_SIZE_LIMIT_BYTES = 16 << 20  # RLIMIT_FSIZE: any single file the program writes, stdout included
MAX_PROCESSES = 64  # RLIMIT_NPROC for the sandbox user, machine-wide (threads count too)
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}


def _probe_bwrap(uid: int | None) -> bool:
    """bubblewrap exists and can create its namespaces here (as the user we will run as)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return False
    cmd = [exe, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "--as-pid-1", "true"]
    try:
        return subprocess.run(cmd, preexec_fn=_drop_to(uid), capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.lru_cache(maxsize=None)
def interpreter() -> str:
    """A Python the sandbox user can execute (a venv under /root is not readable by nobody)."""
    uid = _sandbox_uid()
    candidates = [getattr(sys, "_base_executable", None), sys.executable, shutil.which("python3"), "/usr/bin/python3"]
    for exe in filter(None, candidates):
        try:
            if subprocess.run([exe, "-I", "-c", "pass"], preexec_fn=_drop_to(uid), capture_output=True,
                              timeout=30).returncode == 0:
                return exe
        except (OSError, subprocess.SubprocessError):
            continue
    raise RuntimeError(f"sml.sandbox: no Python interpreter is executable by uid {uid}; tried {candidates}")


@functools.lru_cache(maxsize=None)
def isolation_mode() -> str:
    """``"bwrap"`` when full isolation works on this machine, else ``"rlimits"`` (with a warning)."""
    if os.environ.get("SML_SANDBOX_MODE") == "rlimits":  # for testing the fallback on purpose
        mode = "rlimits"
    else:
        mode = "bwrap" if _probe_bwrap(_sandbox_uid()) else "rlimits"
    if mode == "rlimits":
        warnings.warn(
            "sml.sandbox: bubblewrap is unavailable, running model-written code in the WEAK 'rlimits' "
            "mode: resource limits and a temp dir only, NO filesystem or network isolation. "
            "Install it (`apt-get install bubblewrap`) before running untrusted code.",
            RuntimeWarning, stacklevel=2)
    return mode


def _sandbox_uid() -> int | None:
    return NOBODY if os.geteuid() == 0 else None


def _drop_to(uid: int | None):
    def drop():
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
    return drop


def _limits(timeout_s: float, memory_mb: int, uid: int | None):
    cpu = max(1, int(timeout_s) + 1)

    def apply():
        os.setsid()  # own session and process group: we kill the whole group on timeout
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT_BYTES, FILE_SIZE_LIMIT_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if uid is not None:  # RLIMIT_NPROC is ignored for root, so it only bites after the drop
            resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))
        _drop_to(uid)()
    return apply


def _command(mode: str, workdir: str, script: str) -> list[str]:
    python = [interpreter(), "-I", "-B", script]
    if mode == "rlimits":
        return python
    return ["bwrap", "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--bind", workdir, workdir,
            "--dev", "/dev", "--proc", "/proc", "--unshare-all", "--die-with-parent", "--as-pid-1",
            "--new-session", "--chdir", workdir, "--clearenv",
            *[a for k, v in _ENV.items() for a in ("--setenv", k, v)], "--setenv", "HOME", workdir,
            *python]


def _spawn(cmd: list[str], **kwargs) -> subprocess.Popen:
    """Popen, retrying briefly while the sandbox user is at its machine-wide process limit
    (another sandbox running a fork bomb right now, or killed ones not yet reaped)."""
    for attempt in range(50):
        try:
            return subprocess.Popen(cmd, **kwargs)
        except BlockingIOError:
            time.sleep(0.05 * (attempt + 1))
    return subprocess.Popen(cmd, **kwargs)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read(OUTPUT_LIMIT_BYTES).decode("utf-8", errors="replace")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _status(returncode: int, stderr: str, timed_out: bool) -> str:
    if timed_out or returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "timeout"
    if returncode == 0:
        return "ok"
    if "MemoryError" in stderr[-2000:] or "Cannot allocate memory" in stderr[-2000:]:
        return "memory"
    return "error"


def run(code: str, timeout_s: float = 10.0, memory_mb: int = 512, stdin: str = "",
        files: dict[str, str] | None = None) -> dict:
    """Run ``code`` (a Python program) in the sandbox.

    Returns a dict with ``status`` in {ok, error, timeout, memory}, ``stdout``, ``stderr``
    (each cut to 1 MiB), ``returncode``, ``duration_s`` and ``mode`` (the isolation used).
    ``files`` are extra files written into the program's working directory beforehand.
    Never raises for anything the program does.
    """
    if not isinstance(code, str):
        raise TypeError(f"sandbox.run: code must be a str, got {type(code).__name__}")
    if not timeout_s > 0:
        raise ValueError(f"sandbox.run: timeout_s must be > 0, got {timeout_s!r}")
    if memory_mb < 64:
        raise ValueError(f"sandbox.run: memory_mb must be >= 64 (Python needs it to start), got {memory_mb!r}")
    bad = [n for n in (files or {}) if not n or os.path.basename(n) != n or n in (".", "..", "main.py")]
    if bad:
        raise ValueError(f"sandbox.run: files must be plain file names other than main.py, got {bad}")
    mode, uid = isolation_mode(), _sandbox_uid()
    workdir = tempfile.mkdtemp(prefix="sml-sandbox-")  # the program's only writable place
    outdir = tempfile.mkdtemp(prefix="sml-sandbox-out-")  # ours: output files, never visible to it
    try:
        for name, text in {"main.py": code, **(files or {})}.items():
            with open(os.path.join(workdir, name), "w") as f:
                f.write(text)
        if uid is not None:
            for path in [workdir, *(os.path.join(workdir, n) for n in os.listdir(workdir))]:
                os.chown(path, uid, uid)
        out_path, err_path = os.path.join(outdir, "stdout"), os.path.join(outdir, "stderr")
        env = {**_ENV, "HOME": workdir}
        start = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = _spawn(_command(mode, workdir, "main.py"), cwd=workdir, env=env, stdin=subprocess.PIPE,
                          stdout=out, stderr=err, preexec_fn=_limits(timeout_s, memory_mb, uid))
            timed_out = False
            try:
                proc.communicate(stdin.encode(), timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            except (BrokenPipeError, OSError):
                proc.wait()  # it exited before reading its stdin
            finally:
                _kill_group(proc)  # stray children of a finished program die too
        duration = time.monotonic() - start
        stdout, stderr = _read(out_path), _read(err_path)
        return {"status": _status(proc.returncode, stderr, timed_out), "stdout": stdout, "stderr": stderr,
                "returncode": proc.returncode, "duration_s": round(duration, 3), "mode": mode}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(outdir, ignore_errors=True)
