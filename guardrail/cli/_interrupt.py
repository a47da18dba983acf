"""Clean stops for long commands: SIGINT / SIGTERM let the current item finish, then the command exits.

Python's default SIGINT raises ``KeyboardInterrupt`` wherever the main thread is, and the interpreter then shuts
down while a worker thread may still be inside the model (torch): the process aborts ("terminate called without
an active exception", exit 134) and a half-written output line is possible. Here the first signal only sets a
flag; the command checks it between items (``StopFlag.check`` raises ``Interrupted``), writes its one-line note
and exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM). A second signal exits at once, with
only complete lines written. ``exit_process`` ends the process without the interpreter's shutdown when worker
threads are still busy, so that nothing aborts on the way out.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Interrupted", "StopFlag", "exit_process", "stop_on_signals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):  # like KeyboardInterrupt: passes through `except Exception` blocks
    """A stop was asked for by a signal; raised between items by :meth:`StopFlag.check`."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        """The shell convention for a process stopped by a signal: 128 + its number."""
        return 128 + self.signum

    @property
    def name(self) -> str:
        """The signal's name (``SIGINT``, ``SIGTERM``)."""
        return signal.Signals(self.signum).name


class StopFlag:
    """Set by the first SIGINT / SIGTERM; ``check`` raises ``Interrupted`` once it is set."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.done = 0
        """Items finished so far (counted by the command, for its note)."""

    def check(self) -> None:
        """Raise ``Interrupted`` if a stop was asked for (call it between items, never inside one)."""
        if self.signum is not None:
            raise Interrupted(self.signum)


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Within the block, SIGINT and SIGTERM set the returned flag instead of interrupting (main thread only)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():  # signal handlers can only be set here
        yield flag
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if flag.signum is not None:  # asked twice: leave now; complete lines are already written
            os.write(2, f"\n{signal.Signals(signum).name} again: stopping at once\n".encode())
            os._exit(128 + signum)
        flag.signum = signum

    previous = {sig: signal.signal(sig, handle) for sig in _SIGNALS}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def exit_process(code: int) -> None:
    """Exit with ``code``; when worker threads are still busy in a model call, skip the interpreter's shutdown.

    Abandoned calls (past their time budget) may still be running inside torch on daemon threads; tearing the
    interpreter down under them aborts the process. Output is flushed and exit handlers run first.
    """
    from .._pool import shared_pool

    stats = shared_pool().stats()
    if stats.running == 0 and stats.abandoned == 0:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can be written anyway
            stream.flush()
    atexit._run_exitfuncs()
    os._exit(code)
