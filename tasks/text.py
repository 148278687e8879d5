"""Users' text files as the parsers see them: UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8"), or
UTF-16 with one (Notepad's "Unicode"). A byte that is not UTF-8 becomes UNDECODABLE, so that a parser can name
its line and column instead of refusing the whole file with a codec message. `plural` words counts in messages."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

MAX_INPUT_BYTES = 256 * 2**20
UNDECODABLE = "\ufffd"
BAD_BYTE = "bad byte at column {column}: the file is not UTF-8 text"


def decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def read_text(file: str | Path) -> str:
    """The text of `file`, or of stdin for '-'. Raises OSError when it cannot be read, or when it holds more than
    MAX_INPUT_BYTES: inputs are read whole, and /dev/zero or an endless pipe would fill the memory."""
    if str(file) == "-":
        if sys.stdin is None:  # started with stdin closed ('<&-')
            raise OSError(errno.EBADF, "stdin is closed")
        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    else:
        with open(file, "rb") as f:
            data = f.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise OSError(errno.EFBIG, f"more than {MAX_INPUT_BYTES >> 20} MiB, and inputs are read whole: split it into "
                                   "smaller parts")
    return decode(data)


def split_lines(text: str) -> list[str]:
    """The lines of `text`, broken at \\n, \\r\\n and \\r only: str.splitlines also breaks at form feeds, \\x1c-\\x1e,
    \\x85 and U+2028/U+2029, which shifts the line numbers of every message after one and cuts a JSON line whose
    string holds U+2028 (legal JSON) in two."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def bad_byte(line: str) -> str | None:
    """The message for a line holding a byte that was not UTF-8, else None."""
    column = line.find(UNDECODABLE)
    return None if column < 0 else BAD_BYTE.format(column=column + 1)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """'1 node', '3 nodes', '1,000 nodes'; `nouns` for an irregular plural ('pass', 'passes')."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"
