"""Ctrl-C as a request to stop where the work can stop cleanly.

Long work (training steps, batches of puzzles) should not die halfway through an optimizer update or a line of
output. Inside `CtrlC()` the first Ctrl-C is only noted; the work calls `stop_if_asked()` at points where
stopping loses nothing, and KeyboardInterrupt is raised there. A second Ctrl-C interrupts at once. SIGTERM (what
`kill`, `timeout` and batch schedulers send) counts as a Ctrl-C, but no one is there to send a second one, and a
scheduler kills a few seconds later: work whose safe points are far apart can stop sooner where `terminated`.
SIGHUP (the terminal or ssh session closed) counts as SIGTERM does, unless `nohup` made the process ignore it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading


SIGNALS = (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []))
DEFAULTS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL,
            getattr(signal, "SIGHUP", None): signal.SIG_DFL}


def watched(sig: int) -> bool:
    """Whether a stop signal is this process's to handle: not a SIGHUP that `nohup` set to be ignored (the work
    must then outlive the terminal)."""
    return not (sig == getattr(signal, "SIGHUP", None) and signal.getsignal(sig) == signal.SIG_IGN)


def quiet_worker() -> None:
    """Pool initializer: workers leave Ctrl-C to the parent (which stops the pool) and die quietly on the SIGTERM
    the pool's terminate() sends (or a SIGHUP), instead of each printing a KeyboardInterrupt traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in SIGNALS[1:]:  # SIGTERM, and SIGHUP, which a closing terminal sends the workers too
        signal.signal(sig, signal.SIG_DFL)


class CtrlC:
    def __init__(self, notice: str | None = None, terminate_notice: str | None = None):
        self.notice = notice  # printed on stderr at the first Ctrl-C, e.g. what the work will still finish
        self.terminate_notice = terminate_notice or notice  # the same at SIGTERM
        self.asked = self.terminated = False
        self._previous, self._installed = None, False

    def __enter__(self) -> "CtrlC":
        if threading.current_thread() is threading.main_thread():  # only the main thread receives signals
            self._previous = {sig: signal.signal(sig, self._ask) for sig in SIGNALS if watched(sig)}
            self._installed = True
        return self

    def _ask(self, signum, frame) -> None:
        if self.asked and signum == signal.SIGINT:  # someone at the terminal pressed Ctrl-C again
            raise KeyboardInterrupt
        if self.asked:  # SIGTERM and SIGHUP come together (systemd, a closing terminal): still one clean stop
            self.terminated = True
            return
        self.asked, self.terminated = True, signum != signal.SIGINT  # SIGTERM, or SIGHUP (the terminal closed)
        notice = (self.terminate_notice if self.terminated
                  else self.notice and f"{self.notice}; Ctrl-C again stops at once")
        if notice:  # os.write: a print here could land inside another print to stderr and raise
            with contextlib.suppress(OSError, ValueError, AttributeError):  # a closed terminal or stderr, or one
                # with no file behind it (a notebook's, a test's)
                os.write(sys.stderr.fileno(), f"\n{notice}\n".encode())

    def stop_if_asked(self) -> None:
        if self.asked:
            raise KeyboardInterrupt

    def stop_if_terminated(self) -> None:
        if self.terminated:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if not self._installed:
            return
        # A Ctrl-C while the handlers go back (a second one raises at once) must not leave SIGTERM or SIGHUP on
        # this finished handler, which would ignore them from then on: the signals wait until all are back.
        mask = getattr(signal, "pthread_sigmask", None)  # POSIX; elsewhere SIGINT at least goes back last
        before = mask(signal.SIG_BLOCK, self._previous) if mask is not None else None
        try:
            for sig, previous in sorted(self._previous.items(), key=lambda item: item[0] == signal.SIGINT):
                # a handler installed outside Python reads as None: restore the default then
                signal.signal(sig, previous if previous is not None else DEFAULTS[sig])
        finally:
            if mask is not None:
                mask(signal.SIG_SETMASK, before)
