"""Where a whole command's CPU time goes, per role in its process tree (psutil).

A ``digitscan scan`` is one client process, its Redis, one ``celery worker`` parent and that
parent's pool children (one per worker process). ``run_with_roles`` runs a command and
samples its process tree every ``every_s`` seconds; each process counts with its last
sample, so the figures are floors: a process shorter than an interval, and the last
interval of each, are missed (a few per cent of runs of seconds). The kernel's count of
reaped children cannot fill the gap: scan kills its worker group at the end, and killed
pool processes are reaped by init, not by anyone in the tree.
"""

from __future__ import annotations

import subprocess
import time

import psutil

ROLES = ("client", "celery parent", "pool", "redis", "other")


def role(proc: psutil.Process, root: int) -> str:
    if proc.pid == root:
        return "client"
    try:
        if "redis-server" in proc.name():
            return "redis"
        if "celery" in " ".join(proc.cmdline()):
            parent = proc.parent()
            # A pool child is forked from the parent (same command line) without an exec.
            return "pool" if parent and "celery" in " ".join(parent.cmdline()) else "celery parent"
        # scan forks its Celery parents from the client (embedded.ForkedWorker): same
        # command line as the client, so by their place in the tree.
        parent = proc.parent()
        if parent is not None and parent.pid == root:
            return "celery parent"
        if parent is not None and parent.ppid() == root:
            return "pool"
    except psutil.Error:
        pass
    return "other"


def run_with_roles(cmd: list[str], every_s: float = 0.1, **popen) -> tuple[float, dict, int]:
    """(wall seconds, CPU seconds per role, exit status) of ``cmd``."""
    last: dict[int, tuple[str, float]] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, **popen)
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        for p in tree:
            try:
                cpu = p.cpu_times()
                name = last[p.pid][0] if p.pid in last else role(p, proc.pid)
                last[p.pid] = (name, cpu.user + cpu.system)
            except psutil.Error:
                continue
        time.sleep(every_s)
    wall = time.perf_counter() - t0
    per_role = dict.fromkeys(ROLES, 0.0)
    for name, cpu in last.values():
        per_role[name] += cpu
    return wall, per_role, proc.returncode
