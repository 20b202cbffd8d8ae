"""A process that has imported torch, Lightning, timm and lmguide once and runs each command line
``python -m lmguide.<cmd> <args>`` in a forked child of itself.

A real ``python -m`` pays about 8 s of CPU importing the stack before the command reads its first
argument; most CLI tests check what the command prints and returns, and pay that import 60 times. A
forked child is still a process of its own (its exit code, its stdout and stderr, its own environment,
working directory and Hydra state), so what the test sees is what a shell sees, without the import.

Protocol (JSON lines): the server prints ``{"ready": true}``, then for each request line
``{"id", "module", "args", "cwd", "env", "timeout"}`` answers ``{"id", "returncode", "stdout",
"stderr"}`` (``"timeout": true`` when the child ran past its time and was killed). Requests run
concurrently: each child is forked as its request arrives.

Nothing here may run a torch operation or build a MediaPipe graph before the fork: intra-op thread
pools and graphs do not survive it. ``tests/conftest.py`` (``run_cli``) is the client.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import tempfile
import time
import traceback

#: imported once here; each child re-runs only its command's own module
PRELOAD = [
    "torch",
    "lightning",
    "timm",
    "torchmetrics",
    "hydra",
    "omegaconf",
    "albumentations",
    "cv2",
    "lmguide.runs.runtime",
    "lmguide.models.module",
    "lmguide.data.datamodule",
    "lmguide.train",
    "lmguide.eval",
    "lmguide.predict",
    "lmguide.visualize",
    "lmguide.export",
    "lmguide.prepare",
    "lmguide.sweep_report",
]


def _child(req: dict, out_path: str, err_path: str) -> None:
    """In the forked child: become ``python -m <module> <args>`` and exit with its code."""
    import runpy

    code = 1
    try:
        os.setpgid(0, 0)  # its own process group: a timeout kills its workers too
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, path in ((1, out_path), (2, err_path)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(f, fd)
            os.close(f)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        module = req["module"]
        sys.modules.pop(module, None)  # run afresh as __main__, as python -m does
        sys.argv = [module, *req["args"]]
        sys.path[0] = req["cwd"]  # python -m puts the working directory first
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                sys.stderr.write(f"{exc.code}\n")
                code = 1
        except BaseException:  # noqa: BLE001 - as the interpreter reports an uncaught exception
            traceback.print_exc()
            code = 1
        import atexit

        atexit._run_exitfuncs()  # what interpreter shutdown would run (loggers, W&B)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def serve() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    tmp = tempfile.mkdtemp(prefix="lmguide_forkserver_")
    running: dict[int, tuple[dict, str, str, float]] = {}  # pid -> (request, stdout, stderr, deadline)
    reply = sys.stdout

    def answer(msg: dict) -> None:
        reply.write(json.dumps(msg) + "\n")
        reply.flush()

    answer({"ready": True})
    stdin = sys.stdin.buffer
    buf = b""
    open_input = True
    while open_input or running:
        if open_input:
            ready, _, _ = select.select([stdin], [], [], 0.02)
            if ready:
                chunk = os.read(stdin.fileno(), 1 << 16)
                if not chunk:
                    open_input = False
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    req = json.loads(line)
                    out, err = (os.path.join(tmp, f"{req['id']}.{s}") for s in ("out", "err"))
                    sys.stdout.flush()
                    sys.stderr.flush()
                    pid = os.fork()
                    if pid == 0:
                        _child(req, out, err)
                    running[pid] = (req, out, err, time.monotonic() + float(req.get("timeout", 600)))
        else:
            time.sleep(0.02)
        for pid, (req, out, err, deadline) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            timed_out = not done and time.monotonic() > deadline
            if timed_out:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _, status = os.waitpid(pid, 0)
            elif not done:
                continue
            del running[pid]
            rc = os.waitstatus_to_exitcode(status)
            answer(
                {
                    "id": req["id"],
                    "returncode": rc,
                    "stdout": _read(out),
                    "stderr": _read(err),
                    "timeout": timed_out,
                }  # fmt: skip
            )
            for path in (out, err):
                os.remove(path)


if __name__ == "__main__":
    serve()
