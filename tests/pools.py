"""A worker task for the tests of the process pools (data generation, eval)."""
from __future__ import annotations

import os
import signal


def die_as_if_killed_for_memory(args) -> None:
    """A pool task whose process dies as one killed for memory does (SIGKILL, no exception to hand back)."""
    os.kill(os.getpid(), signal.SIGKILL)
