"""A lock file beside a run directory, for processes that share one output directory."""

from __future__ import annotations

import os
import socket
import time

from absl import logging

__all__ = ["RunLock"]


class RunLock:
    """An exclusive lock file beside a run directory (``<run_dir>.lock``), so one process
    (a shard of a sweep, say) trains the run while the others wait. A lock left by a killed
    process on this host is taken over; one left on another host must be removed by hand
    (the message says which file)."""

    def __init__(self, run_dir: str, poll: float = 5.0, enabled: bool = True):
        self.path = run_dir.rstrip("/") + ".lock"
        self.poll = poll
        self.enabled = enabled
        self.held = False

    def _owner_dead(self) -> bool:
        try:
            with open(self.path) as f:
                host, pid = f.read().split()
        except (OSError, ValueError):
            return False
        if host != socket.gethostname():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def __enter__(self):
        if not self.enabled:
            return self
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        told = False
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                if self._owner_dead():
                    os.unlink(self.path)
                    continue
                if not told:
                    logging.info("Waiting for %s: another process is training this run (remove the file if "
                                 "no process is).", self.path)
                    told = True
                time.sleep(self.poll)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()}\n")
            self.held = True
            return self

    def __exit__(self, *exc):
        if self.held:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
