"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every result and cache file of the package is written through these helpers:
the bytes go to a temporary file in the same folder, which is then renamed
over the target (`os.replace` is atomic on POSIX and Windows). A process
killed mid-write leaves at most a stray `.*.tmp` file, never a truncated
result.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it onto `path` if the block succeeds."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
    tmp = pathlib.Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path, content: bytes) -> None:
    """Writes `content` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(content)


def write_text(path, text: str) -> None:
    """Writes `text` to `path` atomically."""
    write_bytes(path, text.encode())


def write_json(path, obj) -> None:
    """Writes `obj` as indented JSON (with a final newline) to `path` atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


class UnreadableFileError(ValueError):
    """A result file exists but cannot be read as what it should be; the message names it."""


def read_json(path):
    """Reads a JSON file; a file that is not valid JSON is named in the error.

    Raises:
        FileNotFoundError: `path` does not exist.
        UnreadableFileError: `path` is not valid JSON (truncated, hand-edited, binary).
    """
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
        raise UnreadableFileError(f"{path} is not valid JSON ({err}).") from None
