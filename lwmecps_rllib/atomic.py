"""Atomic writes: a file or a folder appears whole under its name, or not at all.

Everything the project keeps on disk (evaluation and sweep JSON, sweep files,
checkpoints, registry copies) goes through these two helpers: the content is written
under a hidden temporary name in the same folder and renamed into place, so a crash
or a Ctrl-C mid-write leaves the previous version (or nothing), never half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary sibling file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Write `data` as indented JSON to `path`, atomically."""
    return write_text(path, json.dumps(data, indent=2, default=str))


@contextmanager
def folder(path: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """A temporary sibling folder to fill; renamed to `path` when the block ends cleanly.

    Args:
        path: Final folder.
        replace: Replace an existing folder (the old one is removed only once the new
            one is in place); when False an existing `path` is an error.

    Yields:
        The temporary folder to write into. On an exception it is removed and `path`
        is left as it was.

    Raises:
        FileExistsError: `path` exists and `replace` is False.
    """
    path = Path(path).resolve()
    if path.exists() and not replace:
        raise FileExistsError(f"{str(path)!r} exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
            old.rmdir()
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_folder(path: str | Path, fill: Callable[[Path], Any], *,
                 replace: bool = True) -> Path:
    """Fill a temporary folder with `fill(tmp)` and rename it to `path` (see :func:`folder`)."""
    with folder(path, replace=replace) as tmp:
        fill(tmp)
    return Path(path).resolve()
