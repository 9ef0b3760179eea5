"""Is the process that wrote a lock file still running? Host identity and pid liveness.

Lock files (a sweep's run claims, a training run's train.lock) name their holder by host, pid
and the pid's start time. On the holder's own host that is enough to tell a live holder from a
dead one at once: the pid must exist, must not be a zombie, and must have the recorded start
time (so a pid reused by an unrelated process does not count). From another host nothing can be
checked; callers fall back to a heartbeat.

Limits: start times come from Linux /proc; elsewhere `process_start` is None and `alive` checks
only that the pid exists. A holder in another pid namespace (a container sharing the hostname)
has pids that mean nothing here: compare `PID_NAMESPACE` before trusting `alive`.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

HOST = socket.gethostname()


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return None


PID_NAMESPACE = _pid_namespace()


def process_start(pid: int) -> str | None:
    """A token for the process's start time (Linux /proc), or None where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime in clock ticks


def alive(pid: int | None, start: str | None = None) -> bool:
    """Whether `pid` runs on this host (and, given `start`, is the process that had it then)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    if start is not None:
        now = process_start(pid)
        if now is not None and now != start:
            return False  # the pid was reused by another process
    try:  # a zombie is dead for our purposes
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return True


def parse_record(data: bytes) -> dict | None:
    """A lock file's JSON object, or None where it is not one (cut by a crash, or foreign)."""
    try:
        info = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None
