"""The compile cache: compiled kernels (native objects, PTX) keyed by a content hash.

    key = make_key(normalized_program_text, schedule, target_arch)
    blob = default_cache().get_or_build(key, lambda: compile_to_bytes(...))

Two layers: a dict in this process, then a directory on disk (`cache_dir()`:
`$WARPWEAVE_CACHE_DIR`, else the user's cache directory). Every key also covers
warpweave's version, a hash of warpweave's own source files, and the LLVM and
llvmlite versions, so a change to any of them never reuses old binaries.

On disk each entry is `<dir>/<key[:2]>/<key>.bin`: a fixed header (magic, format
version, key length, payload length, sha256 of the payload), the key, the payload.
A file that does not check out exactly (truncated, corrupt, another key's, not a
file at all) is counted, deleted where possible and rebuilt -- never trusted.
Writes go to a temp file in the entry's directory, are flushed and fsynced, then
`os.replace`d into place, so readers see an old complete entry or a new complete
one, and concurrent writers of one key are safe (the last rename wins).

A directory that cannot be used (read-only, permission denied, a regular file,
disk full) never raises into the compiler: the cache keeps working in memory and
warns once per directory per process (`RuntimeWarning`).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import shutil
import stat
import struct
import sys
import tempfile
import threading
import warnings
from collections import OrderedDict
from typing import Callable

from ..errors import ArgumentError
from ..options import current
from ..version import __version__

__all__ = ["cache_dir", "tuning_db_path", "source_hash", "make_key", "KernelCache", "CacheStats", "default_cache",
           "ENV_VAR", "FORMAT_VERSION"]

ENV_VAR = "WARPWEAVE_CACHE_DIR"

# Entry format. Bump FORMAT_VERSION when the layout changes (it is also part of every key).
MAGIC = b"WWKCACHE"
FORMAT_VERSION = 1
# magic, format version, key length, payload length, sha256(payload)
_HEADER = struct.Struct("<8sHHQ32s")
_SUFFIX = ".bin"
_TMP_SUFFIX = ".tmp"
_KEY_RE = re.compile(r"[0-9a-f]{2,128}")

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------
# Where the cache lives.

def tuning_db_path() -> str:
    """The tuning database: the `tuning_db` option (`WARPWEAVE_TUNING_DB`), else
    `tuning.db` in the cache directory."""
    return os.path.abspath(os.path.expanduser(current().tuning_db or os.path.join(cache_dir(), "tuning.db")))


def cache_dir() -> str:
    """The on-disk cache directory (absolute): `$WARPWEAVE_CACHE_DIR` if set and non-empty,
    else the user's cache directory -- `$XDG_CACHE_HOME/warpweave` or
    `~/.cache/warpweave` (Linux and other Unixes), `~/Library/Caches/warpweave` (macOS),
    `%LOCALAPPDATA%\\warpweave\\Cache` (Windows). The directory is not created here."""
    env = os.environ.get(ENV_VAR)
    if env:
        return os.path.abspath(os.path.expanduser(env))
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"),
                                                              "AppData", "Local")
        return os.path.abspath(os.path.join(base, "warpweave", "Cache"))
    if sys.platform == "darwin":
        return os.path.join(os.path.expanduser("~"), "Library", "Caches", "warpweave")
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative path is invalid and must be ignored.
    base = xdg if xdg and os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.abspath(os.path.join(base, "warpweave"))


# ---------------------------------------------------------------------------------------
# Keys.

def _hash_tree(root: str) -> str:
    """sha256 over every `*.py` file under `root`, in order of relative path (with `/`
    separators), each file's path and content length-prefixed. `__pycache__` is skipped."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if name.endswith(".py"):
                full = os.path.join(dirpath, name)
                files.append((os.path.relpath(full, root).replace(os.sep, "/"), full))
    files.sort()
    h = hashlib.sha256()
    for rel, full in files:
        try:
            with open(full, "rb") as f:
                content = f.read()
        except OSError as e:  # vanished or unreadable: hash the fact, not a guess
            content = b"\0unreadable\0" + type(e).__name__.encode()
        _encode(h, rel)
        _encode(h, content)
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def source_hash() -> str:
    """A hash of warpweave's own source (every `*.py` in the package), computed once
    per process."""
    return _hash_tree(_PACKAGE_DIR)


def _llvm_versions() -> tuple:
    """(LLVM version tuple, llvmlite version string), read at call time."""
    import llvmlite
    import llvmlite.binding as llvm
    return (tuple(llvm.llvm_version_info), str(llvmlite.__version__))


def _encode(h, part) -> None:
    """Feed `part` to hash `h` unambiguously: a type tag, then a length-prefixed body
    (containers: element count, then each element)."""
    if isinstance(part, bool):  # before int: True must not equal 1
        h.update(b"?" + (b"\1" if part else b"\0"))
    elif isinstance(part, int):
        body = str(part).encode()
        h.update(b"i" + struct.pack("<Q", len(body)) + body)
    elif isinstance(part, str):
        body = part.encode("utf-8", "surrogatepass")
        h.update(b"s" + struct.pack("<Q", len(body)) + body)
    elif isinstance(part, (bytes, bytearray, memoryview)):
        body = bytes(part)
        h.update(b"b" + struct.pack("<Q", len(body)) + body)
    elif isinstance(part, float):
        body = part.hex().encode()  # exact, unlike repr on some values (-0.0 vs 0.0 kept apart)
        h.update(b"f" + struct.pack("<Q", len(body)) + body)
    elif part is None:
        h.update(b"n")
    elif isinstance(part, (tuple, list)):
        h.update((b"t" if isinstance(part, tuple) else b"l") + struct.pack("<Q", len(part)))
        for p in part:
            _encode(h, p)
    else:
        raise ArgumentError(
            f"make_key: cannot hash a part of type {type(part).__name__!r} "
            f"({part!r:.80}); pass str, bytes, int, float, bool, None, or tuples/lists of them")


def make_key(*parts) -> str:
    """sha256 hex of `parts` (str, bytes, int, float, bool, None, tuples and lists of
    them), always including the cache format, warpweave's `__version__`, `source_hash()`
    and the LLVM and llvmlite versions."""
    h = hashlib.sha256()
    _encode(h, ("warpweave-kernel-cache", FORMAT_VERSION, __version__,
                source_hash(), _llvm_versions()))
    _encode(h, tuple(parts))
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# The cache.

@dataclasses.dataclass
class CacheStats:
    hits: int = 0          # get() found the key (memory or disk)
    disk_hits: int = 0     # ... of which from disk
    misses: int = 0        # get() did not find it (including after a bad entry)
    writes: int = 0        # entries written to disk
    corrupt: int = 0       # bad entries found on disk (and not trusted)
    write_errors: int = 0  # disk writes that failed (the entry is kept in memory)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# Directories already warned about in this process (warn once per directory).
_warned_dirs: set[str] = set()
_warn_lock = threading.Lock()


def _warn_once(directory: str, err: BaseException) -> None:
    with _warn_lock:
        if directory in _warned_dirs:
            return
        _warned_dirs.add(directory)
    # Point the warning at the first frame outside this module (the compiler's call).
    level, frame = 1, sys._getframe(0)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(f"warpweave: the compile cache directory {directory!r} is not usable "
                  f"({type(err).__name__}: {err}); compiled kernels are cached in memory only "
                  f"for the rest of this process (set {ENV_VAR} to a writable directory)",
                  RuntimeWarning, stacklevel=level)


class _BadEntry(Exception):
    pass


def _parse(key: str, blob: bytes) -> bytes:
    """The payload of an entry file, or _BadEntry if anything does not check out."""
    if len(blob) < _HEADER.size:
        raise _BadEntry(f"short file ({len(blob)} bytes)")
    magic, version, klen, plen, digest = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise _BadEntry("bad magic")
    if version != FORMAT_VERSION:
        raise _BadEntry(f"format version {version}")
    if len(blob) != _HEADER.size + klen + plen:
        raise _BadEntry(f"length {len(blob)} != {_HEADER.size + klen + plen}")
    if blob[_HEADER.size:_HEADER.size + klen] != key.encode("ascii"):
        raise _BadEntry("entry for another key")
    payload = blob[_HEADER.size + klen:]
    if hashlib.sha256(payload).digest() != digest:
        raise _BadEntry("checksum mismatch")
    return payload


_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def _read_regular(path: str) -> bytes:
    """The bytes of the regular file at `path`, opened without following a symbolic
    link or blocking (a FIFO or device there is an OSError, never a hang)."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        with os.fdopen(fd, "rb") as f:
            fd = -1
            return f.read()
    finally:
        if fd >= 0:
            os.close(fd)


def _serialize(key: str, data: bytes) -> bytes:
    kb = key.encode("ascii")
    return _HEADER.pack(MAGIC, FORMAT_VERSION, len(kb), len(data),
                        hashlib.sha256(data).digest()) + kb + data


def _remove(path: str) -> bool:
    """Delete whatever sits at `path` (file, link or directory); False if it could not."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


class KernelCache:
    """Compiled-kernel bytes by key: an in-process dict in front of a directory.

    `get`, `put` and `get_or_build` never raise because of the directory; a bad entry
    is a miss, an unusable directory degrades to memory (one RuntimeWarning). The
    memory layer keeps the MEMORY_ENTRIES most recently used entries."""

    MEMORY_ENTRIES = 256

    def __init__(self, directory: str | None = None):
        self.directory = os.path.abspath(os.path.expanduser(directory if directory is not None
                                                            else cache_dir()))
        self.stats = CacheStats()
        self._memory: OrderedDict[str, bytes] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._read_disk = True   # False once the directory itself is unusable
        self._write_disk = True  # False once writing has failed

    def __repr__(self):
        return (f"KernelCache({self.directory!r}, entries_in_memory={len(self._memory)}, "
                f"disk={'rw' if self._write_disk else 'r' if self._read_disk else 'off'})")

    @property
    def disk_enabled(self) -> bool:
        """Whether entries are still written to the directory."""
        return self._write_disk

    def entry_path(self, key: str) -> str:
        """Where the entry for `key` lives on disk."""
        _check_key(key)
        return os.path.join(self.directory, key[:2], key + _SUFFIX)

    # -- public API ------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The bytes stored under `key`, or None (a missing or bad entry)."""
        path = self.entry_path(key)
        with self._lock:
            data = self._memory.get(key)
            if data is not None:
                self._memory.move_to_end(key)
                self.stats.hits += 1
                return data
        data = self._read(key, path) if self._read_disk else None
        with self._lock:
            if data is None:
                self.stats.misses += 1
            else:
                self.stats.hits += 1
                self.stats.disk_hits += 1
                data = self._memory.setdefault(key, data)
                self._trim()
        return data

    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` in memory and (if usable) on disk."""
        path = self.entry_path(key)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ArgumentError(f"KernelCache.put: data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        with self._lock:
            self._memory[key] = data
            self._memory.move_to_end(key)
            self._trim()
        if self._write_disk:
            self._write(path, _serialize(key, data))

    def get_or_build(self, key: str, build: Callable[[], bytes],
                     decode: Callable[[bytes], object] | None = None):
        """The cached bytes for `key`, else `build()`'s result, stored. If `build`
        raises, the error propagates and nothing is stored. With `decode`, the result
        is `decode(bytes)`; a cached entry that does not decode (its checksum was
        right, its payload is not) counts as corrupt and is rebuilt."""
        data = self.get(key)
        if data is not None and decode is not None:
            try:
                return decode(data)
            except Exception:  # noqa: BLE001 - whatever a bad payload raises, rebuild it
                self.discard(key)
                data = None
        if data is None:
            data = build()
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise ArgumentError(f"KernelCache.get_or_build: build() returned "
                                    f"{type(data).__name__}, expected bytes")
            data = bytes(data)
            self.put(key, data)
        return data if decode is None else decode(data)

    def discard(self, key: str) -> None:
        """Drop an entry whose payload turned out bad (counted as corrupt)."""
        path = self.entry_path(key)
        with self._lock:
            self.stats.corrupt += 1
            self._memory.pop(key, None)
        _remove(path)

    def _trim(self) -> None:
        """Keep the memory layer to MEMORY_ENTRIES (the disk keeps everything)."""
        while len(self._memory) > self.MEMORY_ENTRIES:
            self._memory.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry: the in-memory layer, and this cache's files on disk
        (`<dir>/<xx>/<key>.bin` and leftover temp files; nothing else is touched)."""
        with self._lock:
            self._memory.clear()
        try:
            subdirs = os.listdir(self.directory)
        except OSError:
            return
        for sub in subdirs:
            subpath = os.path.join(self.directory, sub)
            if not re.fullmatch(r"[0-9a-f]{2}", sub) or not os.path.isdir(subpath):
                continue
            try:
                names = os.listdir(subpath)
            except OSError:
                continue
            for name in names:
                stem = name[:-len(_SUFFIX)] if name.endswith(_SUFFIX) else None
                ours = ((stem is not None and _KEY_RE.fullmatch(stem) and stem[:2] == sub)
                        or (name.startswith(".") and name.endswith(_TMP_SUFFIX)))
                if ours:
                    _remove(os.path.join(subpath, name))
            try:
                os.rmdir(subpath)  # only if now empty
            except OSError:
                pass

    # -- disk layer ------------------------------------------------------------------

    def _read(self, key: str, path: str) -> bytes | None:
        try:
            blob = _read_regular(path)
        except FileNotFoundError:
            return None
        except NotADirectoryError as e:
            # A component of the path is a file: if it is the cache directory itself (or
            # above it), the directory is unusable; if it is the <xx> subdirectory, that
            # is a bad entry of ours.
            sub = os.path.dirname(path)
            if os.path.isdir(self.directory) and os.path.lexists(sub) and not os.path.isdir(sub):
                self._bad(key, path, "subdirectory is not a directory", remove=sub)
                return None
            self._disable(e)
            return None
        except OSError as e:
            # A directory where the file should be, an unreadable file, an I/O error:
            # do not trust it; try to clear it away so that it is rebuilt.
            self._bad(key, path, f"{type(e).__name__}: {e}")
            return None
        try:
            return _parse(key, blob)
        except _BadEntry as e:
            self._bad(key, path, str(e))
            return None

    def _bad(self, key: str, path: str, why: str, remove: str | None = None) -> None:
        with self._lock:
            self.stats.corrupt += 1
        _remove(remove or path)

    def _disable(self, err: BaseException) -> None:
        """The directory itself is unusable (e.g. it is a regular file): memory only."""
        self._read_disk = False
        self._write_disk = False
        _warn_once(self.directory, err)

    def _write_failed(self, err: BaseException) -> None:
        """Writing failed (read-only, permission denied, disk full): stop writing, keep
        reading whatever valid entries the directory has."""
        self._write_disk = False
        with self._lock:
            self.stats.write_errors += 1
        _warn_once(self.directory, err)

    def _write(self, path: str, blob: bytes) -> None:
        sub = os.path.dirname(path)
        try:
            try:
                os.makedirs(sub, exist_ok=True)
            except FileExistsError:
                # <xx> exists and is not a directory (makedirs raised despite
                # exist_ok): if the cache directory itself is fine, clear it away.
                if not os.path.isdir(self.directory) or not _remove(sub):
                    raise
                os.makedirs(sub, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=sub, prefix="." + os.path.basename(path) + ".",
                                       suffix=_TMP_SUFFIX)
        except OSError as e:
            if isinstance(e, NotADirectoryError) or (os.path.lexists(self.directory)
                                                     and not os.path.isdir(self.directory)):
                with self._lock:
                    self.stats.write_errors += 1
                self._disable(e)
            else:
                self._write_failed(e)
            return
        try:
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.replace(tmp, path)
                except IsADirectoryError:
                    # A directory sits where the entry goes: remove it and try once more.
                    _remove(path)
                    os.replace(tmp, path)
                except PermissionError:
                    # On Windows a reader or another writer may hold the target open;
                    # the entry another process is writing is as good as ours.
                    if os.name == "nt" and os.path.isfile(path):
                        _remove(tmp)
                        return
                    raise
            except BaseException:
                _remove(tmp)
                raise
        except OSError as e:
            self._write_failed(e)
            return
        with self._lock:
            self.stats.writes += 1


def _check_key(key) -> None:
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise ArgumentError(f"cache key must be a lowercase hex string of 2 to 128 characters "
                            f"(as make_key returns), not {key!r:.100}")


_default: dict[str, KernelCache] = {}
_default_lock = threading.Lock()


def default_cache() -> KernelCache:
    """The process-wide cache for the current `cache_dir()` (one instance per directory;
    a change of `$WARPWEAVE_CACHE_DIR` between calls selects another instance)."""
    directory = cache_dir()
    with _default_lock:
        c = _default.get(directory)
        if c is None:
            c = _default[directory] = KernelCache(directory)
        return c
