"""The `solve` command line: `app` (from cli_common) with the commands that the modules imported below register,
in the order --help lists them."""

from __future__ import annotations

import errno
import os
import sys

# they register the commands, in the order --help lists them
from . import demo_cli, sudoku_cli, molecule_cli, train_cli, graph_cli, countdown_cli  # noqa: F401
from .cli_common import CANNOT_WRITE, app, error


class _EndWhenReaderGoes:
    """An output stream that ends the command when its reader has gone (`solve ... | head`, also with `2>&1`), as
    `cat` ends: quietly, with the shell's SIGPIPE status 141, not the 1 of an unsolved instance. Unlike restoring
    SIGPIPE's default action (which Python's documentation warns against: a closed socket would kill the process
    too), cleanup still runs. Any other failure to write (a full disk) ends the command with one line on stderr
    and status 74 (sysexits' EX_IOERR) when it is the results' stream (stdout); stderr's own failures are let go,
    so that the results still come (its reader gone too, unless stdout goes to the same pipe: `2>&1 | head`)."""

    def __init__(self, stream, results: bool):
        self._stream, self._results = stream, results

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            self._failed(exc)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        shared = _same_file(1, 2)  # before stderr is pointed at /dev/null
        os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())  # Python's last flush must not fail
        if isinstance(exc, BrokenPipeError) and (self._results or shared):
            raise SystemExit(128 + 13)  # 128 + SIGPIPE
        if self._results:
            error(f"cannot write the output: {exc.strerror or exc}")
            raise SystemExit(CANNOT_WRITE)



def _same_file(fd: int, other: int) -> bool:
    try:
        a, b = os.fstat(fd), os.fstat(other)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class _Closed:
    """stdout when the command was started with it closed (`>&-`): the first write fails as a closed file does
    (a command whose results go there refuses to start: `load_task_model`)."""

    closed_at_start = True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "stdout is closed")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return 1


def main() -> None:
    """The `solve` command."""
    if sys.stderr is None:  # started with it closed (`2>&-`): the work and its results go on without it
        sys.stderr = open(os.devnull, "w")
    if sys.stdout is None:  # `>&-`: a command that writes its results elsewhere (--out) still runs
        sys.stdout = _Closed()
    for stream in (sys.stdout, sys.stderr):  # a file name or label the encoding lacks prints escaped, not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    sys.stdout, sys.stderr = _EndWhenReaderGoes(sys.stdout, True), _EndWhenReaderGoes(sys.stderr, False)
    try:
        app()
    except FloatingPointError as exc:  # damaged weights: a line, not a traceback through the sampler
        error(f"{exc}")
        raise SystemExit(1) from None
    finally:  # what is still buffered goes now, not at shutdown, where a gone reader could not end it with 141
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
