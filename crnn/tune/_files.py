"""The search's small file helpers (local paths and URIs through pyarrow filesystems, via
crnn.shards.resolve). Kept as they were, apart, so that moving them to a shared storage module is
one small change."""

from __future__ import annotations

import json
import os
import posixpath
import uuid


def _abs(path: str) -> str:
    return path.rstrip("/") if "://" in path else os.path.abspath(path)


def _join(root: str, *parts: str) -> str:
    return posixpath.join(root, *parts) if "://" in root else os.path.join(root, *parts)


def _exists(path: str) -> bool:
    from crnn.shards import resolve
    import pyarrow.fs as pafs

    fs, p = resolve(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def _write_bytes(path: str, data: bytes) -> None:
    """Write a file (local: atomically, via a temporary name; URI: one upload)."""
    from crnn.shards import resolve

    fs, p = resolve(path)
    fs.create_dir(posixpath.dirname(p), recursive=True)
    tmp = f"{p}.{uuid.uuid4().hex[:8]}.tmp" if "://" not in path else p
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    if tmp != p:
        fs.move(tmp, p)


def _write_text(path: str, text: str) -> None:
    _write_bytes(path, text.encode())


def _read_bytes(path: str) -> bytes:
    from crnn.shards import resolve

    fs, p = resolve(path)
    with fs.open_input_stream(p) as f:
        return f.read()


def _read_json(path: str) -> dict | None:
    return json.loads(_read_bytes(path).decode()) if _exists(path) else None
