"""Atomic writes: a file or a folder appears whole under its name, or not at all.

Everything the project keeps on disk (evaluation and sweep JSON, sweep files,
checkpoints, registry copies) goes through these helpers: the content is written
under a hidden temporary name in the same folder and renamed into place, so a crash
or a Ctrl-C mid-write leaves the previous version (or nothing), never half a file.

Replacing a folder takes two renames (the old one to the backup `.NAME.old`, the new
one into place). A crash between them leaves the backup and no folder; :func:`recover`
(called by every folder write, and by checkpoint loads) puts the backup back, or
removes it once the new folder is in place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any


def write_text(path: str | Path, text: str, *, exclusive: bool = False) -> Path:
    """Write `text` to `path` through a temporary sibling file and a rename.

    Args:
        path: Final file.
        text: Its content.
        exclusive: Create `path` only if it does not exist (a hard link instead of the
            rename, atomic on local and network file systems alike): of concurrent
            exclusive writers exactly one succeeds.

    Raises:
        FileExistsError: `exclusive` and `path` exists.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Write `data` as indented JSON to `path`, atomically."""
    return write_text(path, json.dumps(data, indent=2, default=str))


def backup_path(path: str | Path) -> Path:
    """Where :func:`folder` keeps the previous version of `path` while it swaps them."""
    path = Path(path).resolve()
    return path.with_name(f".{path.name}.old")


def recover(path: str | Path) -> Path | None:
    """Finish a folder swap that a crash stopped half-way.

    With the backup of `path` present: when `path` is missing the swap stopped between
    its two renames, and the backup (the previous, complete version) is renamed back;
    when `path` is there the swap finished, and the backup is removed.

    Returns:
        `path` when its previous version was restored, else None.

    Raises:
        OSError: the backup could not be restored (the message names both folders).
    """
    path = Path(path).resolve()
    backup = backup_path(path)
    if not backup.is_dir():
        return None
    if path.exists():
        shutil.rmtree(backup, ignore_errors=True)
        return None
    try:
        backup.rename(path)
    except OSError as exc:
        raise OSError(f"cannot restore {str(path)!r} from its backup {str(backup)!r} "
                      f"left by an interrupted replacement: {exc}") from exc
    return path


@contextmanager
def folder(path: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """A temporary sibling folder to fill; renamed to `path` when the block ends cleanly.

    Args:
        path: Final folder.
        replace: Replace an existing folder (the old one is kept as its backup until
            the new one is in place, see :func:`recover`); when False an existing
            `path` is an error.

    Yields:
        The temporary folder to write into. On an exception it is removed and `path`
        is left as it was.

    Raises:
        FileExistsError: `path` exists and `replace` is False.
    """
    path = Path(path).resolve()
    recover(path)
    if path.exists() and not replace:
        raise FileExistsError(f"{str(path)!r} exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        old = backup_path(path) if path.exists() else None
        if old is not None:
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        with suppress(OSError):  # stopped between the renames: the old folder comes back
            recover(path)
        raise


def write_folder(path: str | Path, fill: Callable[[Path], Any], *,
                 replace: bool = True) -> Path:
    """Fill a temporary folder with `fill(tmp)` and rename it to `path` (see :func:`folder`)."""
    with folder(path, replace=replace) as tmp:
        fill(tmp)
    return Path(path).resolve()
