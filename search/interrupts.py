"""Ctrl-C and SIGTERM in a command's process: what arrived, and whether an error is its doing.

A signal's exception can surface as another one: raised while a C extension initializes
(TensorFlow's import), Python reports ``ImportError: initialization failed``; raised inside a
library's ``except``, it becomes that library's error. So the handlers here record the signal
before raising, and ``interrupt_code`` asks the record as well as the exception, so that every
run the command opened is ended KILLED and the exit status is 130/143 whichever error unwinds.

Imports only ``search.errors``.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from search.errors import Terminated, cause_of

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: Terminated.exit_code}
_received: list[int] = []  # the signals this process took, in order


def record(signum: int) -> None:
    """Note a signal that a handler (here or in the tuning loop) took."""
    _received.append(signum)


def received() -> int | None:
    """The first Ctrl-C/SIGTERM this process took, or None."""
    return _received[0] if _received else None


def interrupt_code(err: BaseException | None = None) -> int | None:
    """The exit status (130 or 143) when ``err`` is, or was caused by, a signal; else None."""
    signalled = cause_of(err, KeyboardInterrupt)
    if signalled is not None:
        return EXIT_CODES[signal.SIGTERM if isinstance(signalled, Terminated) else signal.SIGINT]
    first = received()
    return EXIT_CODES.get(first, 130) if first is not None else None


def _handle(signum: int, frame: Any) -> None:
    record(signum)
    if len(_received) == 2:  # a second one while the first unwinds: let the runs close
        sys.stderr.write("stopping: ending the runs this command opened (send it once more to force)\n")
        return
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def install() -> None:
    """Ctrl-C and SIGTERM unwind the command (``KeyboardInterrupt``/``Terminated``), recorded first."""
    _received.clear()  # one record per command (tests run several in one process)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _handle)
        signal.signal(signal.SIGTERM, _handle)
