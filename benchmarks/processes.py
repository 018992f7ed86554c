"""The parent's side of benchmarks.worker: start implementations in their own processes, talk to them.

Every worker gets the same CPUs (it pins itself to them first thing) and the
same thread count: XLA's CPU pool is sized by the affinity mask, torch by
torch.set_num_threads, and OMP_NUM_THREADS/MKL_NUM_THREADS are set for any
library that reads them. Fake CPU devices from XLA_FLAGS are dropped (they
would only split the same cores), and jax workers do not preallocate
accelerator memory, since several of them share one chip.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]


class WorkerError(RuntimeError):
    def __init__(self, impl: str, message: str, *, oom: bool = False, traceback: str = ""):
        super().__init__(f"{impl}: {message}")
        self.impl, self.oom, self.traceback = impl, oom, traceback


def worker_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", "")).strip()
    if flags:
        env["XLA_FLAGS"] = flags
    else:
        env.pop("XLA_FLAGS", None)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


class Worker:
    """One implementation's process; `call` sends a request and returns its result or raises WorkerError."""

    def __init__(self, impl: str, cpus: list[int], threads: int, log_dir: pathlib.Path):
        self.impl = impl
        self.log_path = pathlib.Path(log_dir) / f"{impl}.stderr.txt"
        self._log = open(self.log_path, "w")
        command = [sys.executable, "-m", "benchmarks.worker", "--impl", impl,
                   "--cpus", ",".join(map(str, cpus)), "--threads", str(threads)]
        env = worker_env(threads)
        # The workers take turns on the same cores, and an OpenMP pool that spins after its own segment
        # takes them from the one being timed: beside PyTorch's default waiting, jaxsr's paper train step
        # (batch 8, 2 cores) ran at 13.8 images/s against 18.8 beside PASSIVE, which also made PyTorch's
        # own step faster (22.2 -> 27.8). A policy set by the user is kept (the JSON records it).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, env=env, cwd=REPO)
        self._reply()  # "ready": imports done

    def call(self, cmd: str, **args: Any) -> Any:
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # _reply reports the exit
        return self._reply()

    def _reply(self) -> Any:
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise WorkerError(self.impl, f"worker exited with status {code}; last stderr: {self.stderr_tail()}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise WorkerError(self.impl, reply["error"], oom=reply["oom"], traceback=reply.get("traceback", ""))
        return reply["result"]

    def stderr_tail(self, lines: int = 3) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Pool:
    """Workers on the same CPUs with the same threads; all closed on exit."""

    def __init__(self, cpus: list[int], threads: int, log_dir: pathlib.Path):
        self.cpus, self.threads, self.log_dir = cpus, threads, log_dir
        self.workers: dict[str, Worker] = {}

    def start(self, impl: str) -> Worker:
        self.workers[impl] = Worker(impl, self.cpus, self.threads, self.log_dir)
        return self.workers[impl]

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        for w in self.workers.values():
            w.close()
