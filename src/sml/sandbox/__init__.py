"""Run untrusted, model-written Python in a sandbox and always return a result.

Isolation, strongest available first:
- ``bwrap``: bubblewrap (Debian package ``bubblewrap``; and ``prlimit`` from util-linux). The program sees the
  whole filesystem read-only except its own temp dir and small ``/tmp`` and ``/dev/shm`` (``/run``, where host
  daemons' sockets are, is empty), has no network, its own PID namespace in which it is PID 1
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

``Pool`` runs programs the same way, with the same result, much faster: each of its workers is one
long-lived ``bwrap`` sandbox whose PID 1 is a fork server (``worker.py``) that forks a child
per program instead of starting bubblewrap and a new interpreter. See ``Pool`` for what that changes.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor

NOBODY = 65534
OUTPUT_LIMIT_BYTES = 1 << 20  # what we read back of stdout / stderr
FILE_SIZE_LIMIT_BYTES = 16 << 20  # RLIMIT_FSIZE: any single file the program writes, stdout included
MAX_PROCESSES = 64  # RLIMIT_NPROC of a program (threads count too): per sandbox, machine-wide in the weak mode
# RLIMIT_NPROC of bubblewrap, and so of all sandboxes together: the kernel counts a user namespace's processes
# against its own limit and, one level up, against its creator's. With MAX_PROCESSES there, one fork bomb took
# every slot of the sandbox user and concurrent programs failed to start.
ALL_PROCESSES = 64 * MAX_PROCESSES
# Size of the sandbox's /tmp and /dev/shm: tmpfs is RAM outside RLIMIT_AS, and unsized it may take half the
# machine's memory (a program writing 16 MiB files at ~1 GB/s could exhaust it within its timeout).
TMPFS_LIMIT_BYTES = 256 << 20
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
WORKER_MARGIN_S = 5.0  # a pool worker that has not answered by timeout_s + this is replaced
_WORKER = open(os.path.join(os.path.dirname(__file__), "worker.py")).read()


def _probe_bwrap(uid: int | None) -> bool:
    """bubblewrap exists and can create its namespaces here (as the user we will run as)."""
    exe = shutil.which("bwrap")
    if exe is None or shutil.which("prlimit") is None:  # util-linux's prlimit sets a program's process limit
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


def _job_rlimits(timeout_s: float, memory_mb: int) -> dict[str, tuple[int, int]]:
    """The limits of one program: CPU time, address space, file size, no core dumps."""
    cpu = max(1, int(timeout_s) + 1)
    return {"RLIMIT_CPU": (cpu, cpu + 1), "RLIMIT_AS": (memory_mb << 20, memory_mb << 20),
            "RLIMIT_FSIZE": (FILE_SIZE_LIMIT_BYTES, FILE_SIZE_LIMIT_BYTES), "RLIMIT_CORE": (0, 0)}


def _limits(rlimits: dict[str, tuple[int, int]], uid: int | None, nproc: int = MAX_PROCESSES):
    def apply():
        os.setsid()  # own session and process group: we kill the whole group on timeout
        for name, limit in rlimits.items():
            resource.setrlimit(getattr(resource, name), limit)
        if uid is not None:  # RLIMIT_NPROC is ignored for root, so it only bites after the drop
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        _drop_to(uid)()
    return apply


def _command(mode: str, workdir: str | None, *python_args: str) -> list[str]:
    """``workdir``: the host folder shared with the program; None for a pool worker, which keeps
    everything in its own tmpfs ``/tmp``."""
    python = [interpreter(), "-I", "-B", *python_args]
    if mode == "rlimits":
        return python
    if workdir:  # a program's own process limit, set inside its namespace (a pool worker sets it per program)
        python = ["prlimit", f"--nproc={MAX_PROCESSES}:{MAX_PROCESSES}", "--", *python]
    home = workdir or "/tmp"
    size = str(TMPFS_LIMIT_BYTES)
    # An empty, read-only /run: host daemons listen on unix sockets there (dbus, postgres), and connecting to a
    # socket works through a read-only mount and outside our network namespace.
    return ["bwrap", "--ro-bind", "/", "/", "--size", size, "--tmpfs", "/tmp",
            *(["--bind", workdir, workdir] if workdir else []), "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm",
            "--tmpfs", "/run", "--remount-ro", "/run", "--proc", "/proc",
            "--unshare-all", "--die-with-parent", "--as-pid-1", "--new-session", "--chdir", home, "--clearenv",
            *[a for k, v in _ENV.items() for a in ("--setenv", k, v)], "--setenv", "HOME", home,
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


def _result(returncode: int, stdout: str, stderr: str, timed_out: bool, duration: float, mode: str) -> dict:
    return {"status": _status(returncode, stderr, timed_out), "stdout": stdout, "stderr": stderr,
            "returncode": returncode, "duration_s": round(duration, 3), "mode": mode}


def _check(where: str, code, timeout_s, memory_mb, files) -> None:
    if not isinstance(code, str):
        raise TypeError(f"{where}: code must be a str, got {type(code).__name__}")
    if not timeout_s > 0:
        raise ValueError(f"{where}: timeout_s must be > 0, got {timeout_s!r}")
    if memory_mb < 64:
        raise ValueError(f"{where}: memory_mb must be >= 64 (Python needs it to start), got {memory_mb!r}")
    bad = [n for n in (files or {}) if not n or os.path.basename(n) != n or n in (".", "..", "main.py")]
    if bad:
        raise ValueError(f"{where}: files must be plain file names other than main.py, got {bad}")


def run(code: str, timeout_s: float = 10.0, memory_mb: int = 512, stdin: str = "",
        files: dict[str, str] | None = None) -> dict:
    """Run ``code`` (a Python program) in the sandbox.

    Returns a dict with ``status`` in {ok, error, timeout, memory}, ``stdout``, ``stderr``
    (each cut to 1 MiB), ``returncode``, ``duration_s`` and ``mode`` (the isolation used).
    ``files`` are extra files written into the program's working directory beforehand.
    Never raises for anything the program does.
    """
    _check("sandbox.run", code, timeout_s, memory_mb, files)
    mode, uid = isolation_mode(), _sandbox_uid()
    workdir = tempfile.mkdtemp(prefix="sml-sandbox-")  # the program's only writable place
    outdir = tempfile.mkdtemp(prefix="sml-sandbox-out-")  # ours: output files, never visible to it
    try:
        for name, text in {"main.py": code, **(files or {})}.items():
            with open(os.path.join(workdir, name), "w", errors="surrogatepass") as f:  # lone surrogates (from
                f.write(text)  # JSON) make a file Python rejects, not an exception here
        if uid is not None:
            for path in [workdir, *(os.path.join(workdir, n) for n in os.listdir(workdir))]:
                os.chown(path, uid, uid)
        out_path, err_path = os.path.join(outdir, "stdout"), os.path.join(outdir, "stderr")
        env = {**_ENV, "HOME": workdir}
        nproc = ALL_PROCESSES if mode == "bwrap" else MAX_PROCESSES  # with bwrap, the program's own is set inside
        limits = _limits(_job_rlimits(timeout_s, memory_mb), uid, nproc)
        start = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = _spawn(_command(mode, workdir, "main.py"), cwd=workdir, env=env, stdin=subprocess.PIPE,
                          stdout=out, stderr=err, preexec_fn=limits)
            timed_out = False
            try:
                proc.communicate(stdin.encode(errors="surrogatepass"), timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            except (BrokenPipeError, OSError):
                proc.wait()  # it exited before reading its stdin
            finally:
                _kill_group(proc)  # stray children of a finished program die too
        duration = time.monotonic() - start
        return _result(proc.returncode, _read(out_path), _read(err_path), timed_out, duration, mode)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(outdir, ignore_errors=True)


# bwrap --die-with-parent kills a sandbox when the *thread* that started it exits, so pool workers are
# started from this one long-lived thread, not from the caller's (often a short-lived thread pool's).
_SPAWNER = ThreadPoolExecutor(1, thread_name_prefix="sml-sandbox-spawner")


class _Worker:
    """One long-lived sandbox running the fork server; (re)started on demand."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        cmd = _command("bwrap", None, "-c", _WORKER, str(OUTPUT_LIMIT_BYTES))
        # Not the CPU and address-space limits: the worker applies those to each program it forks.
        limits = {"RLIMIT_FSIZE": (FILE_SIZE_LIMIT_BYTES, FILE_SIZE_LIMIT_BYTES), "RLIMIT_CORE": (0, 0)}
        self.proc = _SPAWNER.submit(_spawn, cmd, cwd="/", env=_ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    preexec_fn=_limits(limits, _sandbox_uid(), ALL_PROCESSES)).result()
        return self.proc

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            _kill_group(proc)  # the bwrap monitor; the worker and its programs die with it (--die-with-parent)
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass

    def run(self, job: dict, timeout_s: float) -> dict:
        """Send one job; the worker's raw result, or a stand-in when the worker failed (it is then killed)."""
        if self.proc is None or self.proc.poll() is not None:  # not started yet, or died since
            self.kill()
            self.start()
        proc = self.proc
        deadline = time.monotonic() + timeout_s + WORKER_MARGIN_S
        try:
            proc.stdin.write(json.dumps(job).encode() + b"\n")
            proc.stdin.flush()
            answer = select.poll()  # not select.select: our fds may be numbered past 1024 in a big process
            answer.register(proc.stdout, select.POLLIN)
            line = b""
            while not line.endswith(b"\n"):
                if not answer.poll(max(0.0, deadline - time.monotonic()) * 1000):
                    self.kill()
                    return {"returncode": -signal.SIGKILL, "stdout": "", "timed_out": True,
                            "stderr": "sml.sandbox: the sandbox worker did not answer in time; it was replaced"}
                chunk = os.read(proc.stdout.fileno(), 1 << 20)
                if not chunk:
                    raise EOFError
                line += chunk
            reply = json.loads(line)
            reply = {"returncode": int(reply["returncode"]), "stdout": str(reply["stdout"]),
                     "stderr": str(reply["stderr"]), "timed_out": bool(reply["timed_out"]),
                     "retire": bool(reply["retire"])}
        except (OSError, EOFError, ValueError, KeyError, TypeError):  # it died, or answered garbage
            self.kill()
            return {"returncode": -signal.SIGKILL, "stdout": "", "timed_out": False,
                    "stderr": "sml.sandbox: the sandbox worker failed during this program; it was replaced"}
        if reply.pop("retire"):  # the program left something behind that the worker could not clean
            self.kill()
        return reply


def _kill_workers(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.kill()


class Pool:
    """``run`` with the same arguments, checks and result as ``sandbox.run``, but each program is forked
    from a warm interpreter in one of ``workers`` long-lived sandboxes instead of starting bubblewrap
    and Python anew: several times faster, above all when the caller is a big process (torch loaded).

    Thread-safe: each call takes a free worker (the most recently used one, so sequential callers
    always meet the same worker) and waits while all are busy. Workers start on first use, are
    replaced when they die, hang past ``timeout_s + WORKER_MARGIN_S`` or answer garbage (that call
    then gets status "timeout"/"error"), and are killed by ``close()``, when the pool is garbage
    collected, at interpreter exit, and with this process (bwrap ``--die-with-parent``).

    Isolation is that of ``run`` (same namespaces, read-only root, no network, cleared environment,
    ``nobody``, the same per-program limits), with these differences: programs of one worker share
    its namespaces one after the other; each is a forked child, not PID 1, of the worker, which kills
    every other process in its namespace after each program and wipes ``/tmp`` and ``/dev/shm``,
    and retires itself when it cannot restore them (or a SysV IPC object is left). A program also
    starts with the worker's memory, which may still hold freed bytes of earlier programs in it.

    In the weak ``rlimits`` mode (no bubblewrap) there is no PID namespace to run a fork server in,
    so ``run`` simply calls ``sandbox.run``.
    """

    def __init__(self, workers: int = 2):
        if not (isinstance(workers, int) and workers >= 1):
            raise ValueError(f"sandbox.Pool: workers must be an int >= 1, got {workers!r}")
        self._workers = [_Worker() for _ in range(workers)]
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        for worker in self._workers:
            self._idle.put(worker)
        self._finalizer = weakref.finalize(self, _kill_workers, self._workers)  # also runs at exit

    def run(self, code: str, timeout_s: float = 10.0, memory_mb: int = 512, stdin: str = "",
            files: dict[str, str] | None = None) -> dict:
        """Same as ``sandbox.run``."""
        _check("sandbox.Pool.run", code, timeout_s, memory_mb, files)
        if isolation_mode() != "bwrap":
            return run(code, timeout_s, memory_mb, stdin, files)
        job = {"code": code, "files": files or {}, "stdin": stdin, "timeout_s": timeout_s,
               "rlimits": {**_job_rlimits(timeout_s, memory_mb), "RLIMIT_NPROC": (MAX_PROCESSES, MAX_PROCESSES)}}
        worker = self._idle.get()
        try:
            if not self._finalizer.alive:  # checked once we have a worker: close() may come while we wait
                raise RuntimeError("sandbox.Pool.run: the pool is closed")
            start = time.monotonic()
            reply = worker.run(job, timeout_s)
            duration = time.monotonic() - start
        finally:
            self._idle.put(worker)
        return _result(reply["returncode"], reply["stdout"], reply["stderr"], reply["timed_out"], duration, "bwrap")

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
