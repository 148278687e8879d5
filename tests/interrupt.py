"""Run the real `solve` command in a child process and press Ctrl-C (SIGINT), or end it as a batch system does
(SIGTERM), once it has shown some progress."""

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

SOLVE = Path(sys.executable).parent / "solve"
ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")  # terminal colours and cursor moves


def ctrl_c_when(args: list[str], ready: str, timeout: float = 300.0,
                sent: signal.Signals = signal.SIGINT) -> tuple[int, str, str]:
    """Start `solve ARGS` with stderr on a pseudo-terminal (so that its progress bar is drawn), send `sent` as
    soon as stdout + stderr match the regex `ready`, and return (exit status, stdout, stderr); terminal escape
    sequences read as spaces."""
    controller, terminal = pty.openpty()
    # rich draws a live bar only on a terminal it takes for interactive: say what kind, whatever CI's TERM is
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    env.pop("TTY_INTERACTIVE", None)
    # A shell starts background jobs (CI's, nohup's) with SIGINT ignored, and Python then leaves it so: as at a
    # terminal, the child gets the default disposition, which Python turns into KeyboardInterrupt.
    child = subprocess.Popen([str(SOLVE), *args], stdout=subprocess.PIPE, stderr=terminal, stdin=subprocess.DEVNULL,
                             env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(terminal)
    stdout = child.stdout.fileno()
    received = {stdout: b"", controller: b""}
    reading, pressed = {stdout, controller}, False
    deadline = time.monotonic() + timeout
    try:
        while reading:
            if time.monotonic() > deadline:
                raise AssertionError(f"solve {' '.join(args)} did not finish in {timeout} s")
            for fd in select.select(list(reading), [], [], 0.5)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # a pseudo-terminal reads as an error once the child has closed it
                    chunk = b""
                received[fd] += chunk
                if not chunk:
                    reading.discard(fd)
            shown = ESCAPES.sub(b" ", received[stdout] + received[controller]).decode(errors="replace")
            if not pressed and re.search(ready, shown):
                child.send_signal(sent)
                pressed = True
    finally:
        if child.poll() is None:
            child.kill()
        os.close(controller)
        child.stdout.close()
    assert pressed, f"never saw {ready!r}: {received[controller].decode(errors='replace')[-500:]}"
    try:
        status = child.wait(timeout=60)  # its streams are closed: it is exiting
    except subprocess.TimeoutExpired:
        child.kill()
        raise AssertionError(f"solve {' '.join(args)} closed its output but did not exit") from None
    return status, received[stdout].decode(), ESCAPES.sub(b" ", received[controller]).decode(errors="replace")
