"""Side-by-side processes for the research commands (``sweep --jobs``,
``tune --jobs``): a queue of commands, at most ``jobs`` running at once, each
in its own process with its output in a log file, spread over the visible GPUs.

One process per unit of work (a sweep cell, a tuning trial) keeps a crash —
a kernel fault, an abort, a kill — to that unit: the next one starts in its
slot. Small models leave most of a GPU idle, so several processes may share one;
each learns how many do through ``SEQREC_CONCURRENT_RUNS`` (recorded in its
metrics, so shared-GPU times are never read as speeds).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def visible_gpus() -> list[str]:
    """Ids of the GPUs this process may use (``CUDA_VISIBLE_DEVICES`` or all)."""
    import torch

    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [g.strip() for g in env.split(",") if g.strip()] if env else []
    return ids or [str(i) for i in range(torch.cuda.device_count())]


def exit_text(code: int) -> str:
    """``exited with 1`` / ``was killed by SIGABRT`` for a process's return code."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with {code}"


def seqrec_command(global_args: Sequence[str], *args: str) -> list[str]:
    """``python -m seqrec_core GLOBAL_ARGS ARGS`` with this interpreter."""
    return [sys.executable, "-m", "seqrec_core", *global_args, *args]


def launch_pool(
    commands: Sequence[tuple[str, Sequence[str]]],
    jobs: int,
    log_dir: Path,
    gpus: Sequence[str] = (),
    keep_going: bool = False,
    poll_s: float = 0.2,
    on_exit: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Run ``commands`` (name, argv) with at most ``jobs`` processes side by side,
    each one's output in ``log_dir/<name>.log``. Slot ``i`` runs on
    ``gpus[i % len(gpus)]`` (``CUDA_VISIBLE_DEVICES``) when GPUs are given.
    Each process gets ``OMP_NUM_THREADS`` = cores / ``jobs`` unless it is set.
    Without ``keep_going`` no new command starts after a failure (running ones
    finish). Returns each started command's exit code (negative: killed by that
    signal); ``on_exit(name, code)`` is called as each one ends."""
    from seqrec_core.gpu import CONCURRENT_RUNS_ENV

    log_dir.mkdir(parents=True, exist_ok=True)
    pending = list(commands)
    running: dict[int, tuple[str, subprocess.Popen, object]] = {}
    codes: dict[str, int] = {}
    stop = False
    while running or (pending and not stop):
        for slot in range(jobs):
            if slot in running or not pending or stop:
                continue
            name, cmd = pending.pop(0)
            env = dict(os.environ)
            if gpus:
                gpu = str(gpus[slot % len(gpus)])
                env["CUDA_VISIBLE_DEVICES"] = gpu
                sharing = sum(str(gpus[i % len(gpus)]) == gpu for i in range(jobs))
            else:
                sharing = jobs
            env[CONCURRENT_RUNS_ENV] = str(sharing)
            # N processes each taking every core would oversubscribe the CPU.
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
            log = open(log_dir / f"{name}.log", "w", encoding="utf-8")  # noqa: SIM115
            proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=env)
            running[slot] = (name, proc, log)
        time.sleep(poll_s)
        for slot, (name, proc, log) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            log.close()
            del running[slot]
            codes[name] = code
            if on_exit is not None:
                on_exit(name, code)
            if code and not keep_going:
                stop = True
    return codes
