"""The `solve` command line: `app` (from cli_common) with the commands that the modules imported below register,
in the order --help lists them."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from . import demo_cli, sudoku_cli, molecule_cli, train_cli, graph_cli  # noqa: F401  (they register the commands)
from .cli_common import app, error


class _EndWhenReaderGoes:
    """An output stream that ends the command when its reader has gone (`solve ... | head`, also with `2>&1`), as
    `cat` ends: quietly, with the shell's SIGPIPE status 141, not the 1 of an unsolved instance. Unlike restoring
    SIGPIPE's default action (which Python's documentation warns against: a closed socket would kill the process
    too), cleanup still runs."""

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._end()

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._end()

    def _end(self) -> NoReturn:
        os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())  # Python's last flush must not fail
        raise SystemExit(128 + 13)  # 128 + SIGPIPE


def main() -> None:
    """The `solve` command."""
    if sys.stdout is not None and sys.stderr is not None:  # None: started with the stream closed (`>&-`)
        sys.stdout, sys.stderr = _EndWhenReaderGoes(sys.stdout), _EndWhenReaderGoes(sys.stderr)
    try:
        app()
    except FloatingPointError as exc:  # damaged weights: a line, not a traceback through the sampler
        error(f"{exc}")
        raise SystemExit(1) from None
    finally:  # what is still buffered goes now, not at shutdown, where a gone reader could not end it with 141
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
