"""The fork server that runs as PID 1 of one long-lived bubblewrap sandbox (see ``sml.sandbox.Pool``).

``sml.sandbox`` reads this file and runs it with ``python -I -B -c``; it is not imported. Protocol: one
JSON job per line on stdin (``code``, ``files``, ``stdin``, ``timeout_s``, ``rlimits``), one JSON result
per line on stdout (``returncode``, ``stdout``, ``stderr``, ``timed_out``, ``retire``).

Each program runs in a child forked from this process and exec()'d as ``__main__`` in the interpreter it
inherits, with the modules below already imported: no new interpreter, which is where the speed comes
from. After it, every other process in the namespace is killed and reaped, and what it may have
written (``/tmp``, ``/dev/shm``, ``/dev``) is wiped; when that fails the result says ``retire`` and
this worker exits, so the host starts a clean one.
"""
import ast  # noqa: F401  (pre-imported for the programs: the harness and common candidate imports)
import atexit
import bisect  # noqa: F401
import builtins
import collections  # noqa: F401
import contextlib
import ctypes
import functools  # noqa: F401
import heapq  # noqa: F401
import io  # noqa: F401
import itertools  # noqa: F401
import json
import math  # noqa: F401
import os
import re  # noqa: F401
import resource
import select
import shutil
import signal
import string  # noqa: F401
import sys
import tempfile
import time
import traceback  # noqa: F401
import types
import typing  # noqa: F401

OUTPUT_LIMIT = int(sys.argv[1])  # bytes of stdout / stderr sent back
WRITABLE = ("/tmp", "/dev/shm")  # where a program can create files, besides /dev itself
PR_SET_DUMPABLE = 4


def snapshot() -> dict:
    """The entries of /dev (a program may add, remove, replace or chmod them) and the writable folders."""
    paths = ["/dev", *WRITABLE, *(os.path.join("/dev", name) for name in os.listdir("/dev"))]
    return {path: (st.st_ino, st.st_mode) for path in paths for st in [os.lstat(path)]}


def restore(clean: dict) -> bool:
    """Wipe what the program may have left behind; False when the sandbox is not as it was."""
    try:
        for top in WRITABLE:
            for name in os.listdir(top):
                path = os.path.join(top, name)
                with contextlib.suppress(OSError):
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        os.unlink(path)
        ipc_left = any(len(open(f"/proc/sysvipc/{kind}").readlines()) > 1 for kind in ("msg", "sem", "shm"))
        return snapshot() == clean and not any(os.listdir(top) for top in WRITABLE) and not ipc_left
    except OSError:  # e.g. a folder made unreadable
        return False


def fork(deadline: float) -> int:
    while True:
        try:
            return os.fork()
        except BlockingIOError:  # the sandbox user is at its process limit (a fork bomb in another sandbox)
            if time.monotonic() > deadline:
                raise  # we die; the host reports an error and starts a new worker
            time.sleep(0.05)


def execute(path: str, source: str) -> int:
    """Run ``source`` as ``__main__`` the way ``python main.py`` would; its exit code."""
    main = types.ModuleType("__main__")
    main.__file__, main.__builtins__, main.__spec__ = path, builtins, None
    sys.modules["__main__"], sys.argv = main, ["main.py"]
    try:
        exec(compile(source, path, "exec"), vars(main))
        code = 0
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code
        if not isinstance(code, int):  # sys.exit("message")
            print(code, file=sys.stderr)
            code = 1
    except BaseException as exc:
        exc = exc.with_traceback(exc.__traceback__.tb_next)  # the traceback starts in main.py, not here
        sys.excepthook(type(exc), exc, exc.__traceback__)
        code = 1
    for stream in (sys.stdout, sys.stderr):  # as python does after the main module: what it printed survives
        with contextlib.suppress(Exception):  # a thread or an atexit hook that then hangs until the timeout
            stream.flush()
    if "threading" in sys.modules:  # what the interpreter does at exit: join threads, run atexit hooks
        sys.modules["threading"]._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return code


def child(job: dict, home: str, streams: list) -> None:
    """In the forked child: become the program. Never returns."""
    code = 1
    try:
        os.setsid()  # its own group and session, away from ours
        for name, limit in job["rlimits"].items():
            resource.setrlimit(getattr(resource, name), tuple(limit))
        os.chdir(home)
        for fd, stream in enumerate(streams):
            os.dup2(stream.fileno(), fd)
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])  # the control pipes among them
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
        os.environ["HOME"] = os.environ["PWD"] = home
        code = execute(os.path.join(home, "main.py"), job["code"])
    finally:
        os._exit(code & 0xFF)


def run_job(job: dict, n: int) -> dict:
    deadline = time.monotonic() + job["timeout_s"]
    home = f"/tmp/job{n}"
    os.mkdir(home, 0o700)
    for name, text in {"main.py": job["code"], **job["files"]}.items():
        with open(os.path.join(home, name), "w", errors="surrogatepass") as f:  # as sandbox.run: lone surrogates
            f.write(text)  # must not kill the worker
    # stdin, stdout, stderr: unnamed files (O_TMPFILE) that the program reaches only through fds 0-2
    streams = [tempfile.TemporaryFile(dir="/tmp") for _ in range(3)]
    streams[0].write(job["stdin"].encode(errors="surrogatepass"))
    streams[0].seek(0)
    pid = fork(deadline)
    if pid == 0:
        child(job, home, streams)
    pidfd = os.pidfd_open(pid)
    timed_out = not select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))[0]
    os.close(pidfd)
    with contextlib.suppress(ProcessLookupError):
        # As PID 1, kill(-1) reaches every other process in our namespace: the program's group and any
        # child that left it (setsid, double fork). It is atomic against a fork bomb.
        os.kill(-1, signal.SIGKILL)
    status = os.waitpid(pid, 0)[1]
    while True:  # orphans are reparented to us, PID 1: reap them all
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    if timed_out:
        returncode = -signal.SIGKILL  # what sandbox.run reports for a program it killed
    elif os.WIFSIGNALED(status):
        returncode = 128 + os.WTERMSIG(status)  # what bwrap reports for a program killed by a signal
    else:
        returncode = os.WEXITSTATUS(status)
    outputs = []
    for stream in streams[1:]:
        stream.seek(0)
        outputs.append(stream.read(OUTPUT_LIMIT).decode("utf-8", errors="replace"))
    for stream in streams:
        stream.close()
    return {"returncode": returncode, "stdout": outputs[0], "stderr": outputs[1], "timed_out": timed_out}


def main() -> None:
    # Programs run as our user: without this they could open /proc/1/fd/* (our control pipes),
    # /proc/1/mem, or ptrace us.
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
    # The kernel drops signals sent by namespace members to their PID 1 unless it has a handler for them.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # The control pipes move off fds 0 and 1 (which get /dev/null), so sys.stdin and sys.stdout, which
    # the programs inherit, never point at them.
    jobs, results = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    clean = snapshot()
    for n, line in enumerate(jobs):
        result = run_job(json.loads(line), n)
        result["retire"] = not restore(clean)
        results.write(json.dumps(result).encode() + b"\n")
        results.flush()
        if result["retire"]:
            break


if __name__ == "__main__":
    main()
