"""How a training run is asked to stop: SIGTERM or SIGINT set a flag that the loop reads after
each step (so it saves a checkpoint and exits cleanly), agreed across processes."""

from __future__ import annotations

import signal
import threading
from typing import Any

import jax
import numpy as np


class StopFlag:
    """SIGTERM/SIGINT set a flag that the loop checks after each step; a second SIGINT raises
    KeyboardInterrupt at once."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def is_set(self) -> bool:
        local = self.signum is not None
        if jax.process_count() == 1:
            return local
        from jax.experimental import multihost_utils  # every process must stop at the same step

        return bool(np.any(multihost_utils.process_allgather(np.array(local))))
