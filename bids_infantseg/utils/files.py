"""Atomic file writes: a file is either its old content or its complete new content.

Why one place: outputs, model folders and training checkpoints must survive a killed run
without a half-written file; each used to carry its own temporary-and-rename code, some
without flushing to disk or with a fixed temporary name two writers could share.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], None], mode: int | None = None) -> Path:
    """Call ``write(temporary)`` in ``path``'s folder, flush it to disk, set ``mode`` if
    given, then rename it over ``path``.

    The temporary name starts with a dot (ignored by BIDS tools) and keeps the real name's
    ending, which nibabel needs to choose compression.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{secrets.token_hex(4)}.tmp-{path.name}")
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        if mode is not None:
            temporary.chmod(mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
