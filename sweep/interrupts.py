"""Clean stops: SIGINT and SIGTERM end a sweep as an exception the driver handles (rows kept,
manifest "interrupted", MLflow parent KILLED, Ray stopped), and the CLI exits 130 or 143 with one
line instead of a traceback."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class SweepInterrupted(BaseException):
    """A stop signal arrived while a sweep ran (BaseException: no ``except Exception`` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.rows_kept = 0

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, the first SIGINT/SIGTERM raises :class:`SweepInterrupted` in the main
    thread; further ones are ignored while the sweep cleans up. Handlers are restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in signals}

    def handler(signum: int, _frame) -> None:
        for s in signals:
            signal.signal(s, signal.SIG_IGN)  # cleaning up: a second Ctrl-C must not cut it short
        raise SweepInterrupted(signum)

    for s in signals:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
