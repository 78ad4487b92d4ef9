"""Private files: the state directory holds password hashes, session tokens and customer
conversations, so only the server's own user may read it.

The state directory is ``0700`` and every file in it ``0600`` (owner bits only). Three layers
keep it so: the CLI sets ``umask(0o077)`` at start (every file any part of botkit writes is
born private); SQLite databases are created ``0600`` before SQLite opens them (SQLite gives
the ``-wal``, ``-shm`` and ``-journal`` files the database file's mode); and
:func:`secure_state_dir`, run whenever a project is loaded, finds anything group- or
other-accessible, fixes it and logs what it changed (or stops with an error saying what to
do when it cannot).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from botkit.errors import ProjectError

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_umask() -> int:
    """Files and directories created from now on are the owner's only; returns the old umask."""
    return os.umask(PRIVATE_UMASK)


def _tighten(path: Path) -> str | None:
    """Drop group/other permission bits of one file or directory; what changed, or None."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return None  # a link's target is not ours to change; its own mode means nothing on Linux
    mode = stat.S_IMODE(st.st_mode)
    wanted = 0o700 if stat.S_ISDIR(st.st_mode) else mode & 0o700
    if mode == wanted:
        return None
    try:
        path.chmod(wanted)
    except OSError as exc:
        raise ProjectError(f"{path} is readable by other users (mode {mode:04o}) and botkit cannot fix it "
                           f"({exc.strerror}); run `chmod {wanted:o} {path}` as its owner, then start again") from exc
    return f"{path}: {mode:04o} -> {wanted:04o}"


def secure_state_dir(state_dir: Path) -> list[str]:
    """Create the state directory ``0700`` if missing; make it and everything in it private.

    Returns what was changed (also logged as one warning); raises ProjectError if a mode
    cannot be fixed.
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    changed = [c for c in [_tighten(state_dir)] if c]
    for root, dirs, files in os.walk(state_dir):
        for name in dirs + files:
            try:
                fixed = _tighten(Path(root) / name)
            except FileNotFoundError:  # removed while we walked (another process's temporary file)
                continue
            if fixed:
                changed.append(fixed)
    if changed:
        log.warning("the state directory was readable by other users; made private (owner only): %s",
                    "; ".join(changed))
    return changed


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode ``0600`` if missing (an empty file is a valid new SQLite
    database), and make an existing one private; its SQLite side files too."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for candidate in (path, *(path.with_name(path.name + s) for s in SQLITE_SIDE_FILES)):
        try:
            _tighten(candidate)
        except FileNotFoundError:
            continue
    return path


def write_private_text(path: Path, text: str) -> Path:
    """Write a text file that only the owner can read (mode ``0600`` from the first byte)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode otherwise
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    return path


__all__ = ["private_file", "private_umask", "secure_state_dir", "write_private_text"]
