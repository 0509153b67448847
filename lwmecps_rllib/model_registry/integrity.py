"""Names and checksums the registry trusts: model ids, algorithm names, checkpoint manifests.

A model id and an algorithm name become folder names under the artifact root, so both
are restricted to letters, digits, `.`, `_` and `-` (no separator, never `.` or `..`).
A checkpoint's checksum is the SHA-256 of its manifest: one (relative path, size,
SHA-256) entry per file, sorted by path, as compact JSON.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

#: Allowed model ids: letters, digits, `.`, `_`, `-`; a letter or digit first; 128 at most.
MODEL_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
#: Allowed algorithm names (the first part of a model id): as model ids, 64 at most.
ALGORITHM_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


class RegistryError(Exception):
    """A registry operation that cannot be done (unknown model, bad stage, bad checkpoint)."""


def check_name(name: str, value: Any, pattern: str) -> str:
    """`value` when it is a string matching `pattern` in full.

    Raises:
        RegistryError: naming the field and the allowed pattern.
    """
    if not isinstance(value, str) or re.fullmatch(pattern, value) is None:
        raise RegistryError(f"{name} must match {pattern} (letters, digits, '.', '_', '-', "
                            f"starting with a letter or digit), got {value!r}")
    return value


def checkpoint_files(root: Path) -> list[tuple[str, Path]]:
    """Every file under `root` as (relative POSIX path, path), sorted by relative path."""
    return sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_manifest(path: str | Path) -> list[tuple[str, int, str]]:
    """(relative POSIX path, size in bytes, SHA-256) of every file under `path`, sorted.

    Raises:
        RegistryError: when `path` holds no files.
    """
    root = Path(path)
    files = checkpoint_files(root)
    if not files:
        raise RegistryError(f"checkpoint {str(root)!r} holds no files")
    return [(rel, p.stat().st_size, _sha256(p)) for rel, p in files]


def checkpoint_checksum(path: str | Path) -> str:
    """SHA-256 of the checkpoint's manifest (:func:`checkpoint_manifest`) as compact JSON.

    Each file is one (path, size, digest) entry, so no two different sets of files
    share a manifest: moving bytes from one file's content into another's name changes it.
    """
    manifest = json.dumps(checkpoint_manifest(path), separators=(",", ":"))
    return hashlib.sha256(manifest.encode()).hexdigest()


def legacy_checksum(path: Path) -> str:
    """The checksum of schema 1 (names and contents concatenated), for migration only."""
    h = hashlib.sha256()
    for rel, p in checkpoint_files(path):
        h.update(rel.encode())
        h.update(b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()
