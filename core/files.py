"""Files written whole or not at all, and digests of their contents."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def files_digest(paths: list[Path]) -> str:
    """'sha256:' and the first 16 hex digits of the SHA-256 of the files' contents, in order: the same data under
    another name or place."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]


def write_atomically(path: Path, write: Callable[[Path], object], follow_links: bool = False) -> None:
    """`write(tmp)` to a fresh temporary name beside `path` (its suffix kept, for writers that go by it), renamed
    over `path` only when complete: never a half-written file at `path`, no other file touched, and no temporary
    file left behind (a full disk, Ctrl-C). A symbolic link is replaced, or with `follow_links` (a user's output
    file) its target is; what exists and is not a regular file (/dev/stdout, a pipe) is written directly.
    Checkpoints replace links: in the Hugging Face cache a snapshot's files link to blobs other revisions share."""
    path = Path(path)
    if path.exists() and not path.is_file():  # follows links
        write(path)
        return
    target = Path(os.path.realpath(path)) if follow_links else path
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix)
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        _give_usual_mode(tmp, target)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _give_usual_mode(tmp: Path, path: Path) -> None:
    """Writers such as mkstemp and safetensors make files 0600: give the replacement the mode `path` has, or a
    new file's (0666 less the umask), so that a shared folder can read what was written."""
    try:
        tmp.chmod(path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
    except OSError:  # a file system without modes: the content matters more
        pass


def _umask() -> int:
    """The process's umask, read without setting it: os.umask can only read it by changing it, and a file another
    thread made in between would get the wrong mode. Linux reports it in /proc; elsewhere it is read once (below,
    at import, before threads are likely)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _UMASK_AT_IMPORT


_UMASK_AT_IMPORT = os.umask(0o022)
os.umask(_UMASK_AT_IMPORT)
