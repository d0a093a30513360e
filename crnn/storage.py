"""Storage: files and directories on a local disk, ``file://`` or any filesystem pyarrow reads
(``s3://bucket/prefix``, ``gs://``, ``hdfs://``, ...), in one place.

    write_json("s3://bucket/runs/x/metrics.json", {"mse": np.float32(1.5), "psnr": float("inf")})
    read_json("s3://bucket/runs/x/metrics.json")           # {"mse": 1.5, "psnr": None}
    publish_dir("runs/x/model", lambda d: copy_dir(ckpt, d, ignore=("optimizer.pt",)), marker="model.pt")

Every ``path`` is a local path (made absolute) or a URI; :func:`resolve` turns it into a
``pyarrow.fs`` filesystem and the path inside it (``FileSystem.from_uri``). Missing files raise
FileNotFoundError naming the path; a URI pyarrow does not know raises ValueError (ArrowInvalid).

What "atomic" means here:

* :func:`write_bytes` (and text, JSON): on a local disk the file is written under a temporary name
  beside it and renamed over it, so a reader sees the old file or the whole new one, never part
  (a crash of this process leaves at most a ``*.tmp`` file; no fsync, so not proof against a power
  cut). On an object store a file is one upload, which the store makes visible only when complete.
* :func:`publish_dir`: see there. Locally a rename; on an object store (no rename) the new content
  is staged under a sibling prefix, then copied into place with a ``marker`` file last.

Copies never use pyarrow's threaded transfers: ``copy_files(use_threads=True)`` deadlocks when a
directory holds more files than Arrow has I/O threads (apache/arrow#32372, #15233), which is why Ray
Train uploads with ``use_threads=False`` too (ray-project/ray#32256).

JSON is written one way, :func:`write_json`: :func:`json_safe` first (numpy scalars and arrays ->
Python, NaN/inf -> null, keys -> str), then strict JSON (``allow_nan=False``), indented, one
trailing newline.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import glob
import json
import math
import os
import posixpath
import shutil
import tempfile
import uuid
import warnings
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow.fs as pafs

__all__ = [
    "resolve", "is_local", "absolute", "join", "exists", "read_bytes", "read_text", "read_json",
    "write_bytes", "write_text", "write_json", "json_safe", "copy_dir", "local_copy", "publish_dir",
]

_MISSING = object()


# ----------------------------------------------------------------------------- paths
def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path (made absolute) or a URI: ``file:///x``,
    ``s3://bucket/prefix``, anything ``pyarrow.fs.FileSystem.from_uri`` knows (ValueError otherwise)."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def is_local(path: str) -> bool:
    """True for a local path or a ``file://`` URI (what this machine's disk holds)."""
    return "://" not in path or path.startswith("file://")


def absolute(path: str) -> str:
    """A path that means the same from any working directory: a local path made absolute, a URI
    as given without a trailing ``/``."""
    return path.rstrip("/") if "://" in path else os.path.abspath(path)


def location(path: str, follow_links: bool = True) -> str:
    """The place ``path`` names, spelled one way, for comparing two paths: a local path or a
    ``file://`` URI becomes the absolute local path with ``.``, ``..`` and a leading ``//`` folded --
    with ``follow_links`` the real path (``os.path.realpath``: ``file:///r/x``, ``/r/x/``, ``//r/x``,
    ``/r/./x``, ``/r/y/../x`` and a link to ``/r/x`` are all ``/r/x``; parts that do not exist yet are
    kept as written), without it as written (``os.path.normpath``). Any other URI is kept as given
    without a trailing ``/`` (an object store has no links)."""
    if path.startswith("file://"):
        try:
            path = resolve(path)[1]
        except (ValueError, OSError):  # not a URI pyarrow reads: compared as written
            return path.rstrip("/")
    elif "://" in path:
        return path.rstrip("/")
    if follow_links:
        return os.path.realpath(path)
    p = os.path.normpath(os.path.abspath(path))
    return "/" + p.lstrip("/") if p.startswith("//") else p


def inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies under it, as written (links not followed: a link inside
    ``root`` to a directory elsewhere is removed with ``root``) or where the links lead (a link
    elsewhere to a directory inside ``root``): either one is enough (:func:`location`)."""
    def under(a: str, b: str) -> bool:
        return a == b or a.startswith(b.rstrip("/") + "/")

    return any(under(location(path, f), location(root, f)) for f in (True, False))


def join(root: str, *parts: str) -> str:
    """``root``/``parts``: ``/``-joined for a URI, ``os.path.join`` for a local path."""
    return posixpath.join(root, *parts) if "://" in root else os.path.join(root, *parts)


def _is_local_fs(fs: pafs.FileSystem) -> bool:
    # the filesystems with a real rename; every other one is treated as an object store
    return fs.type_name == "local"


def exists(path: str) -> bool:
    """Whether a file or directory exists at ``path``."""
    fs, p = resolve(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def check_dir_target(path: str, what: str = "--out") -> None:
    """ValueError naming ``what`` when ``path`` cannot become a directory because it, or the nearest
    existing folder above it, is a file (jobs call this before any work: the write came last)."""
    fs, p = resolve(path)
    cur = p
    while True:
        kind = fs.get_file_info(cur).type
        if kind == pafs.FileType.Directory:
            return
        if kind != pafs.FileType.NotFound:
            where = "" if cur == p else f": {cur} is"
            raise ValueError(f"{what} {path}{where or ' is'} a file, not a directory")
        parent = posixpath.dirname(cur.rstrip("/"))
        if not parent or parent == cur:
            return
        cur = parent


# ----------------------------------------------------------------------------- files
def read_bytes(path: str) -> bytes:
    """The content of the file ``path``; FileNotFoundError naming ``path`` when there is none."""
    fs, p = resolve(path)
    try:
        with fs.open_input_stream(p) as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such file", path) from None


def read_text(path: str) -> str:
    """The UTF-8 text of the file ``path`` (UnicodeDecodeError for other bytes)."""
    return read_bytes(path).decode("utf-8")


def read_json(path: str, default: Any = _MISSING) -> Any:
    """The JSON value in the file ``path``; ``default`` when there is no such file (if given, else
    FileNotFoundError). Malformed JSON raises ValueError naming ``path``."""
    try:
        text = read_text(path)
    except FileNotFoundError:
        if default is _MISSING:
            raise
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def write_bytes(path: str, data: bytes) -> str:
    """Write the file ``path`` (parent directories created), replacing any file there; atomic for
    readers (module docstring): a local file goes to ``<path>.<random>.tmp`` first, then is renamed."""
    fs, p = resolve(path)
    fs.create_dir(posixpath.dirname(p), recursive=True)
    if not _is_local_fs(fs):
        with fs.open_output_stream(p) as f:  # one upload, visible only once complete
            f.write(data)
        return path
    tmp = f"{p}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        fs.move(tmp, p)  # rename(2): replaces p in one step
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(tmp)
        raise
    return path


def write_text(path: str, text: str) -> str:
    """:func:`write_bytes` of ``text`` as UTF-8."""
    return write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """``obj`` as plain JSON values, recursively: dict keys -> str, tuples and numpy arrays -> lists,
    numpy scalars -> Python numbers, NaN and +-inf -> None. Any other object goes through
    ``default`` (e.g. ``repr``) when given, else TypeError naming its type."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v, default) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, default) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist(), default)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if default is not None:
        return json_safe(default(obj))
    raise TypeError(f"json_safe: a {type(obj).__name__} ({obj!r:.80}) is not a JSON value; pass default=")


def write_json(path: str, obj: Any, default: Callable[[Any], Any] | None = None) -> str:
    """Write ``json_safe(obj, default)`` as strict JSON (2-space indent, a final newline) to ``path``
    through :func:`write_text`. TypeError for a value that is not JSON and no ``default``."""
    return write_text(path, json.dumps(json_safe(obj, default), indent=2, allow_nan=False) + "\n")


# ----------------------------------------------------------------------------- directories
def _files(fs: pafs.FileSystem, root: str) -> list[str]:
    """Paths (relative to ``root``, ``/``-separated, sorted) of every file under ``root``."""
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return sorted(i.path[len(root.rstrip("/")) + 1:] for i in infos if i.type == pafs.FileType.File)


def copy_dir(src: str, dst: str, ignore: tuple[str, ...] = ()) -> str:
    """Copy every file under the directory ``src`` to ``dst`` (created; files already there with the
    same names are replaced), across any two filesystems, single-threaded (module docstring).
    ``ignore``: ``fnmatch`` patterns of file names to leave out (e.g. ``("optimizer.pt",)``).
    FileNotFoundError / NotADirectoryError naming ``src`` when it is not a directory."""
    sfs, s = resolve(src)
    dfs, d = resolve(dst)
    kind = sfs.get_file_info(s).type
    if kind == pafs.FileType.NotFound:
        raise FileNotFoundError(errno.ENOENT, "no such directory", src)
    if kind != pafs.FileType.Directory:
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", src)
    dfs.create_dir(d, recursive=True)
    if not ignore:
        pafs.copy_files(s, d, source_filesystem=sfs, destination_filesystem=dfs, use_threads=False)
        return dst
    for rel in _files(sfs, s):
        if any(fnmatch.fnmatch(posixpath.basename(rel), pat) for pat in ignore):
            continue
        target = posixpath.join(d, rel)
        dfs.create_dir(posixpath.dirname(target), recursive=True)  # copy_files of one file makes no parents
        pafs.copy_files(posixpath.join(s, rel), target, source_filesystem=sfs, destination_filesystem=dfs,
                        use_threads=False)
    return dst


@contextlib.contextmanager
def local_copy(path: str, ignore: tuple[str, ...] = ()) -> Iterator[str]:
    """A local path with the contents of the directory ``path``: the path itself when it is local
    (absolute; it may not exist), else a temporary copy (:func:`copy_dir`, without the file names
    in ``ignore``), deleted on exit."""
    fs, p = resolve(path)
    if _is_local_fs(fs):
        yield p
        return
    tmp = tempfile.mkdtemp(prefix="crnn-copy-")
    try:
        copy_dir(path, tmp, ignore=ignore)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_local(p: str) -> None:
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)


def publish_dir(dest: str, fill: Callable[[str], Any], marker: str | None = None) -> str:
    """Publish a directory at ``dest``: ``fill(staging)`` writes its content under ``staging`` (a
    fresh sibling of ``dest`` on the same filesystem: a local path for a local ``dest``, a URI for a
    URI), then it replaces whatever was at ``dest``. Returns ``dest``.

    If ``fill`` raises, the staging directory is deleted and ``dest`` is untouched. Otherwise:

    * local (and ``file://``): ``dest`` (if any) is renamed to ``<dest>.old-<random>``, the staging
      directory ``<dest>.staging-<random>`` renamed to ``dest``, and the old one deleted. Readers see
      the old directory or the whole new one (or, between the two renames, none; if the second
      rename fails the old one is put back, and a crash in between leaves it at ``.old-``).
    * object stores (S3, GCS, ...; no rename): staged under the prefix ``<dest>.staging-<random>``.
      Then ``marker`` (a file name) is deleted at ``dest`` first, everything else at ``dest`` next,
      the staged files are copied in (server-side where the store allows) with ``marker`` last, and
      the staging prefix is deleted. A reader that requires ``marker`` (a dataset card, a model
      file) therefore never takes a half-copied directory; one that lists ``dest`` mid-copy may see
      part of it. A crash during the copy leaves the complete new content under the staging prefix:
      nothing written is lost. ``marker`` must be written by ``fill`` (RuntimeError otherwise).

    Two publishers racing for one ``dest`` are not coordinated. A process killed mid-publish (no
    ``except`` runs) leaves its ``<dest>.staging-*`` (or, between the renames, ``<dest>.old-*``)
    directory behind: the next local publish to ``dest`` warns (UserWarning) naming each such
    sibling, and leaves them (one may be another publisher's, still running).
    """
    fs, root = resolve(dest)
    token = uuid.uuid4().hex[:8]
    if _is_local_fs(fs):
        os.makedirs(os.path.dirname(root), exist_ok=True)
        stale = sorted(glob.glob(glob.escape(root) + ".staging-*") + glob.glob(glob.escape(root) + ".old-*"))
        if stale:
            warnings.warn(f"publishing {dest}: left from an interrupted (or a concurrent) publish, not "
                          f"removed: {', '.join(stale)} (a .staging- folder holds an unfinished new "
                          f"version, an .old- one the version it replaced; delete them once no publish runs)")
        staging = f"{root}.staging-{token}"
        os.makedirs(staging)
        try:
            fill(staging)
            if marker and not os.path.isfile(os.path.join(staging, marker)):
                raise RuntimeError(f"publishing {dest}: no {marker} was written")
            if os.path.lexists(root):
                old = f"{root}.old-{token}"
                os.rename(root, old)
                try:
                    os.rename(staging, root)
                except BaseException:
                    os.rename(old, root)
                    raise
                _remove_local(old)
            else:
                os.rename(staging, root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return dest

    if "/" not in root.strip("/"):
        raise ValueError(f"publish_dir: {dest} is a bucket; publish under a prefix in it (s3://bucket/name)")
    staging_uri = f"{dest.rstrip('/')}.staging-{token}"
    _, staging = resolve(staging_uri)
    try:
        fill(staging_uri)
        names = _files(fs, staging)
        if marker and marker not in names:
            raise RuntimeError(f"publishing {dest}: no {marker} was written")
    except BaseException:
        with contextlib.suppress(OSError):  # fill may have written nothing there
            fs.delete_dir(staging)
        raise
    if fs.get_file_info(root).type != pafs.FileType.NotFound:
        if marker:
            with contextlib.suppress(FileNotFoundError):
                fs.delete_file(posixpath.join(root, marker))  # first: the old content stops counting
        fs.delete_dir_contents(root, missing_dir_ok=True)
    order = [n for n in names if n != marker] + ([marker] if marker else [])
    for rel in order:
        fs.copy_file(posixpath.join(staging, rel), posixpath.join(root, rel))
    fs.delete_dir(staging)
    return dest
