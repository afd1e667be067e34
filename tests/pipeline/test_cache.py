"""The on-disk compile cache (warpweave.pipeline.cache): keys, the two layers, the entry
format, atomic writes, corrupt entries, unusable directories, concurrent writers."""
import errno
import hashlib
import multiprocessing
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import warnings

import pytest

import warpweave
from warpweave.pipeline import cache as C
from warpweave.errors import ArgumentError


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch):
    # "Warn once per directory per process": give each test a fresh process-wide record.
    monkeypatch.setattr(C, "_warned_dirs", set())
    monkeypatch.setattr(C, "_default", {})


@pytest.fixture
def cdir(tmp_path):
    return str(tmp_path / "cache")


def key(*parts):
    return C.make_key("test_cache", *parts)


def all_files(root):
    """Every file (any name, hidden included) under root, as paths relative to root."""
    out = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def assert_only_entries(root):
    """Nothing but `<xx>/<key>.bin` files under root: no temp files left behind."""
    for rel in all_files(root):
        sub, name = os.path.split(rel)
        assert name.endswith(".bin") and not name.startswith("."), rel
        assert len(sub) == 2 and name.startswith(sub), rel


def runtime_warnings(record):
    return [w for w in record if issubclass(w.category, RuntimeWarning)]


def fresh_get(directory, k):
    """Read through a new instance (empty memory layer), so the disk layer answers."""
    c = C.KernelCache(directory)
    return c.get(k), c.stats


# ---------------------------------------------------------------------------------------
# Hits and misses, entry format.

def test_miss_build_hit(cdir):
    c = C.KernelCache(cdir)
    k = key("a")
    assert c.get(k) is None
    assert c.stats.misses == 1 and c.stats.hits == 0

    calls = []

    def build():
        calls.append(1)
        return b"kernel-bytes"

    assert c.get_or_build(k, build) == b"kernel-bytes"
    assert c.get_or_build(k, build) == b"kernel-bytes"
    assert len(calls) == 1
    assert c.stats.hits == 1 and c.stats.disk_hits == 0 and c.stats.writes == 1

    # A second instance (another process, in effect) finds it on disk.
    c2 = C.KernelCache(cdir)
    assert c2.get_or_build(k, lambda: pytest.fail("must not rebuild")) == b"kernel-bytes"
    assert c2.stats.hits == 1 and c2.stats.disk_hits == 1 and c2.stats.misses == 0
    # ... and then from its memory layer.
    assert c2.get(k) == b"kernel-bytes"
    assert c2.stats.disk_hits == 1 and c2.stats.hits == 2


def test_entry_layout_and_header(cdir):
    c = C.KernelCache(cdir)
    k = key("layout")
    payload = os.urandom(1000)
    c.put(k, payload)
    path = os.path.join(cdir, k[:2], k + ".bin")
    assert c.entry_path(k) == path
    assert all_files(cdir) == [os.path.join(k[:2], k + ".bin")]
    blob = open(path, "rb").read()
    magic, version, klen, plen, digest = struct.unpack_from("<8sHHQ32s", blob)
    assert magic == C.MAGIC and version == C.FORMAT_VERSION
    assert plen == len(payload) and digest == hashlib.sha256(payload).digest()
    assert blob[52:52 + klen] == k.encode() and blob[52 + klen:] == payload


def test_put_replaces_and_accepts_bytes_like(cdir):
    c = C.KernelCache(cdir)
    k = key("replace")
    c.put(k, b"old")
    c.put(k, bytearray(b"new"))
    assert c.get(k) == b"new" and type(c.get(k)) is bytes
    assert fresh_get(cdir, k)[0] == b"new"
    c.put(k, memoryview(b""))  # an empty payload is a valid entry
    assert fresh_get(cdir, k)[0] == b""


def test_bad_arguments(cdir):
    c = C.KernelCache(cdir)
    for bad in ["", "a", "AB" * 10, "../" + "0" * 10, "ab/cd", "0" * 129, 12, None, b"abcd"]:
        with pytest.raises(ArgumentError):
            c.get(bad)
        with pytest.raises(ArgumentError):
            c.put(bad, b"x")
    k = key("args")
    with pytest.raises(ArgumentError):
        c.put(k, "not bytes")
    with pytest.raises(ArgumentError):
        c.get_or_build(k, lambda: "not bytes")
    assert c.get(k) is None and not os.path.exists(cdir)


def test_threads_share_one_cache(cdir):
    c = C.KernelCache(cdir)
    keys = [key("thread", i % 8) for i in range(64)]
    errors = []

    def work(i):
        try:
            k = keys[i]
            want = k.encode() * 10
            assert c.get_or_build(k, lambda: want) == want
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert_only_entries(cdir)
    for k in set(keys):
        assert fresh_get(cdir, k)[0] == k.encode() * 10


# ---------------------------------------------------------------------------------------
# Keys.

def test_key_is_deterministic_sha256_hex():
    k = C.make_key("prog", ("sched", 4), b"\x00\x01", "sm_90")
    assert k == C.make_key("prog", ("sched", 4), b"\x00\x01", "sm_90")
    assert len(k) == 64 and all(ch in "0123456789abcdef" for ch in k)


def test_every_part_changes_the_key():
    base = ["normalized program", ("schedule", 128, 4), "sm_90", b"\x01\x02"]
    k0 = C.make_key(*base)
    for i in range(len(base)):
        changed = list(base)
        changed[i] = ("other", changed[i])
        assert C.make_key(*changed) != k0, i
    assert C.make_key(*base[:-1]) != k0
    assert C.make_key(*base, "") != k0
    assert C.make_key(*reversed(base)) != k0


def test_encoding_is_unambiguous():
    cases = [(), ("",), (b"",), ((),), ([],), (None,), (0,), (False,), (1,), (True,), ("1",),
             (b"1",), (1.0,), (0.0,), (-0.0,), (-1,), (2 ** 70,), (2 ** 70 + 1,),
             ("ab", "c"), ("a", "bc"), ("abc",), (b"ab", b"c"), (b"a", b"bc"),
             ((1, 2), 3), (1, (2, 3)), (1, 2, 3), ((1, 2, 3),), ([1, 2, 3],),
             (("a",),), ("a",), ("x" * 1000,), ("x" * 1001,), ("\u00e9",), ("e\u0301",),
             ("",) * 2, ((), ()), (((),),)]
    keys = [C.make_key(*p) for p in cases]
    assert len(set(keys)) == len(cases)


def test_unhashable_parts_are_rejected():
    for bad in [object(), {"a": 1}, {1, 2}, ("ok", object())]:
        with pytest.raises(ArgumentError):
            C.make_key(bad)


def test_versions_and_source_hash_change_the_key(monkeypatch):
    import llvmlite
    import llvmlite.binding as llvm
    k0 = C.make_key("p")
    changes = [(C, "__version__", warpweave.__version__ + ".post1"),
               (C, "source_hash", lambda: "0" * 64),
               (llvm, "llvm_version_info", (1, 2, 3)),
               (llvmlite, "__version__", "0.0.0"),
               (C, "FORMAT_VERSION", C.FORMAT_VERSION + 1)]
    seen = {k0}
    for obj, name, value in changes:
        with monkeypatch.context() as m:
            m.setattr(obj, name, value)
            k = C.make_key("p")
        assert k not in seen, name
        seen.add(k)
        assert C.make_key("p") == k0


def test_key_is_stable_across_processes():
    want = C.make_key("a", 1, (b"x", None, 2.5))
    code = ("from warpweave.pipeline.cache import make_key; "
            "print(make_key('a', 1, (b'x', None, 2.5)))")
    root = os.path.dirname(os.path.dirname(warpweave.__file__))
    for seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed,
                   PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        assert out.stdout.strip() == want


def test_source_hash_covers_the_package_and_is_computed_once(monkeypatch):
    h = C.source_hash()
    assert len(h) == 64
    assert h == C._hash_tree(os.path.dirname(warpweave.__file__))
    monkeypatch.setattr(C, "_hash_tree", lambda root: pytest.fail("recomputed"))
    assert C.source_hash() == h


def test_hash_tree_sensitivity(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "a.py").write_bytes(b"ab")
    (root / "b.py").write_bytes(b"c")
    (root / "sub" / "c.py").write_bytes(b"x = 1\n")
    h0 = C._hash_tree(str(root))
    assert C._hash_tree(str(root)) == h0
    seen = {h0}

    def differs():
        h = C._hash_tree(str(root))
        assert h not in seen
        seen.add(h)

    # Files that are not Python sources, and bytecode caches, do not count.
    (root / "notes.txt").write_bytes(b"irrelevant")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "a.py").write_bytes(b"junk")
    assert C._hash_tree(str(root)) == h0

    (root / "sub" / "c.py").write_bytes(b"x = 2\n")   # content
    differs()
    (root / "a.py").write_bytes(b"a")                  # bytes moved between files
    (root / "b.py").write_bytes(b"bc")
    differs()
    (root / "b.py").rename(root / "bb.py")            # a rename
    differs()
    (root / "sub" / "new.py").write_bytes(b"")        # a new (empty) file
    differs()
    (root / "sub" / "new.py").rename(root / "new.py")  # a move to another directory
    differs()


# ---------------------------------------------------------------------------------------
# The in-memory layer.

def test_memory_layer_survives_deleted_directory(cdir):
    c = C.KernelCache(cdir)
    k1, k2 = key("mem", 1), key("mem", 2)
    c.put(k1, b"one")
    shutil.rmtree(cdir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert c.get(k1) == b"one"
        assert fresh_get(cdir, k1)[0] is None
        # The next write recreates the directory without complaint.
        assert c.get_or_build(k2, lambda: b"two") == b"two"
    assert fresh_get(cdir, k2)[0] == b"two"
    assert c.disk_enabled


# ---------------------------------------------------------------------------------------
# Corrupt entries: detected, not trusted, deleted and rebuilt.

def _flip(blob, i):
    b = bytearray(blob)
    b[i] ^= 0x40
    return bytes(b)


def _write_at(path, data):
    os.unlink(path)
    with open(path, "wb") as f:
        f.write(data)


CORRUPTIONS = {
    "truncated_payload": lambda p, k, blob: _write_at(p, blob[:-17]),
    "truncated_header": lambda p, k, blob: _write_at(p, blob[:20]),
    "truncated_key": lambda p, k, blob: _write_at(p, blob[:60]),
    "trailing_bytes": lambda p, k, blob: _write_at(p, blob + b"\0"),
    "flipped_payload_byte": lambda p, k, blob: _write_at(p, _flip(blob, len(blob) - 100)),
    "flipped_last_byte": lambda p, k, blob: _write_at(p, _flip(blob, len(blob) - 1)),
    "flipped_digest_byte": lambda p, k, blob: _write_at(p, _flip(blob, 25)),
    "flipped_length_field": lambda p, k, blob: _write_at(p, _flip(blob, 12)),
    "wrong_magic": lambda p, k, blob: _write_at(p, b"NOTMAGIC" + blob[8:]),
    "wrong_format_version": lambda p, k, blob: _write_at(
        p, blob[:8] + struct.pack("<H", C.FORMAT_VERSION + 1) + blob[10:]),
    "another_keys_entry": lambda p, k, blob: _write_at(
        p, C._serialize(C.make_key("other"), blob[52 + 64:])),
    "garbage": lambda p, k, blob: _write_at(p, os.urandom(len(blob))),
    "zero_length": lambda p, k, blob: _write_at(p, b""),
    "directory": lambda p, k, blob: (os.unlink(p), os.mkdir(p),
                                     open(os.path.join(p, "x"), "wb").close()),
    "empty_directory": lambda p, k, blob: (os.unlink(p), os.mkdir(p)),
    "subdirectory_is_a_file": lambda p, k, blob: (
        shutil.rmtree(os.path.dirname(p)), _write_at_new(os.path.dirname(p), blob)),
}


def _write_at_new(path, data):
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_entry_is_rebuilt_and_replaced(cdir, kind):
    k = key("corrupt")
    good = os.urandom(4096)
    C.KernelCache(cdir).put(k, good)
    path = os.path.join(cdir, k[:2], k + ".bin")
    CORRUPTIONS[kind](path, k, open(path, "rb").read())

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bad entry is not a broken directory: no warning
        c = C.KernelCache(cdir)
        assert c.get(k) is None  # never trusted, never raises
        assert c.stats.corrupt == 1 and c.stats.misses == 1
        assert not os.path.lexists(path)  # the bad thing was deleted
        rebuilt = os.urandom(3000)
        calls = []
        assert c.get_or_build(k, lambda: calls.append(1) or rebuilt) == rebuilt
        assert calls == [1]

    assert os.path.isfile(path) and not os.path.islink(path)
    got, stats = fresh_get(cdir, k)
    assert got == rebuilt and stats.disk_hits == 1 and stats.corrupt == 0
    assert_only_entries(cdir)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_put_over_a_bad_entry(cdir, kind):
    # put() without a get() first: the bad thing in the way must not stop the write.
    k = key("put-over")
    C.KernelCache(cdir).put(k, b"first")
    path = os.path.join(cdir, k[:2], k + ".bin")
    CORRUPTIONS[kind](path, k, open(path, "rb").read())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        C.KernelCache(cdir).put(k, b"second")
    assert fresh_get(cdir, k)[0] == b"second"


def test_unreadable_entry_is_rebuilt(cdir):
    k = key("unreadable")
    c0 = C.KernelCache(cdir)
    c0.put(k, b"data")
    path = c0.entry_path(k)
    os.chmod(path, 0)
    try:
        try:
            open(path, "rb").close()
        except PermissionError:
            pass
        else:
            pytest.skip("file permissions are not enforced (running as root?)")
        c = C.KernelCache(cdir)
        assert c.get_or_build(k, lambda: b"rebuilt") == b"rebuilt"
        assert c.stats.corrupt == 1
        assert fresh_get(cdir, k)[0] == b"rebuilt"
    finally:
        if os.path.exists(path):
            os.chmod(path, 0o600)


# ---------------------------------------------------------------------------------------
# Atomic writes.

def test_writes_leave_no_temp_files(cdir):
    c = C.KernelCache(cdir)
    for i in range(50):
        c.put(key("atomic", i), os.urandom(i * 37))
    c.put(key("atomic", 3), b"again")
    assert_only_entries(cdir)
    assert len(all_files(cdir)) == 50


def test_failed_build_writes_nothing(cdir):
    c = C.KernelCache(cdir)
    k = key("fails")

    def build():
        raise ValueError("codegen failed")

    with pytest.raises(ValueError, match="codegen failed"):
        c.get_or_build(k, build)
    assert not os.path.exists(cdir) or all_files(cdir) == []
    assert c.get(k) is None and c.stats.writes == 0
    # Another entry still writes fine, and the failed key can be built later.
    assert c.get_or_build(k, lambda: b"ok") == b"ok"
    assert all_files(cdir) == [os.path.join(k[:2], k + ".bin")]


def test_interrupted_write_leaves_no_temp_file(cdir, monkeypatch):
    c = C.KernelCache(cdir)
    k = key("interrupted")

    def interrupted(fd):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", interrupted)
        with pytest.raises(KeyboardInterrupt):
            c.put(k, b"data")
    assert all_files(cdir) == []
    assert fresh_get(cdir, k)[0] is None


def test_failed_rename_leaves_no_temp_file(cdir, monkeypatch):
    c = C.KernelCache(cdir)
    k = key("rename")

    def broken_replace(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as m, warnings.catch_warnings(record=True) as rec:
        m.setattr(os, "replace", broken_replace)
        warnings.simplefilter("always")
        c.put(k, b"data")
    assert len(runtime_warnings(rec)) == 1
    assert all_files(cdir) == []
    assert c.get(k) == b"data"


# ---------------------------------------------------------------------------------------
# Unusable directories degrade to memory with one warning.

def _exercise_degraded(c, n=3):
    """Use a cache whose directory cannot be written; everything works from memory."""
    for i in range(n):
        k = key("degraded", i)
        calls = []
        assert c.get_or_build(k, lambda: calls.append(1) or f"v{i}".encode()) == f"v{i}".encode()
        assert c.get_or_build(k, lambda: pytest.fail("rebuilt")) == f"v{i}".encode()
        assert c.get(k) == f"v{i}".encode()
        c.put(key("degraded-put", i), b"p")
        assert c.get(key("degraded-put", i)) == b"p"
        assert calls == [1]


def _check_one_warning(rec, directory):
    ws = runtime_warnings(rec)
    assert len(ws) == 1, [str(w.message) for w in ws]
    assert directory in str(ws[0].message)
    return str(ws[0].message)


@pytest.fixture
def readonly_dir(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    os.chmod(d, 0o500)
    try:
        try:
            fd, probe = tempfile.mkstemp(dir=d)
        except PermissionError:
            pass
        else:
            os.close(fd)
            os.unlink(probe)
            pytest.skip("chmod does not stop writes here (running as root?)")
        yield str(d)
    finally:
        os.chmod(d, 0o700)


def _make_readonly_after(d, populate):
    os.chmod(d, 0o700)
    populate()
    os.chmod(d, 0o500)
    # A prepopulated subdirectory must be read-only too.
    for sub in os.listdir(d):
        os.chmod(os.path.join(d, sub), 0o500)


def test_readonly_directory_warns_once_and_works_from_memory(readonly_dir):
    k_pre = key("prepopulated")
    _make_readonly_after(readonly_dir, lambda: C.KernelCache(readonly_dir).put(k_pre, b"pre"))
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            c = C.KernelCache(readonly_dir)
            # Valid entries in a read-only cache are still used.
            assert c.get(k_pre) == b"pre" and c.stats.disk_hits == 1
            _exercise_degraded(c)
            _exercise_degraded(C.KernelCache(readonly_dir))  # same directory: no new warning
        msg = _check_one_warning(rec, readonly_dir)
        assert "Permission" in msg
        assert all_files(readonly_dir) == [os.path.join(k_pre[:2], k_pre + ".bin")]
    finally:
        for sub in os.listdir(readonly_dir):
            os.chmod(os.path.join(readonly_dir, sub), 0o700)


def test_permission_denied_warns_once_and_works_from_memory(cdir, monkeypatch):
    # The same degradation as a read-only directory, simulated so it runs as root too.
    k_pre, k_pre2 = key("prepopulated"), key("prepopulated", 2)
    C.KernelCache(cdir).put(k_pre, b"pre")
    C.KernelCache(cdir).put(k_pre2, b"pre2")

    def denied(*a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied", cdir)

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        c = C.KernelCache(cdir)
        assert c.get(k_pre) == b"pre" and c.stats.disk_hits == 1
        _exercise_degraded(c)
        assert not c.disk_enabled and c.stats.write_errors == 1
        # Valid entries are still read after writing has failed.
        assert c.get(k_pre2) == b"pre2" and c.stats.disk_hits == 2
        _exercise_degraded(C.KernelCache(cdir))
    msg = _check_one_warning(rec, cdir)
    assert "PermissionError" in msg
    assert all_files(cdir) == sorted(os.path.join(k[:2], k + ".bin") for k in (k_pre, k_pre2))


def test_disk_full_warns_once_and_leaves_no_temp_file(cdir, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m, warnings.catch_warnings(record=True) as rec:
        m.setattr(os, "fsync", full)
        warnings.simplefilter("always")
        c = C.KernelCache(cdir)
        _exercise_degraded(c)
    msg = _check_one_warning(rec, cdir)
    assert "No space left" in msg
    assert all_files(cdir) == []


@pytest.mark.parametrize("where", ["directory", "parent"])
def test_path_is_a_file_warns_once_and_works_from_memory(tmp_path, where):
    f = tmp_path / "a_file"
    f.write_bytes(b"not a directory")
    d = str(f) if where == "directory" else str(f / "cache")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        c = C.KernelCache(d)
        assert c.get(key("file")) is None  # reading first must not raise either
        _exercise_degraded(c)
        _exercise_degraded(C.KernelCache(d))
    _check_one_warning(rec, d)
    assert f.read_bytes() == b"not a directory"


def test_warning_points_at_the_caller(tmp_path):
    f = tmp_path / "a_file"
    f.write_bytes(b"")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        C.KernelCache(str(f)).put(key("x"), b"x")
    (w,) = runtime_warnings(rec)
    assert w.filename == __file__


# ---------------------------------------------------------------------------------------
# Concurrent writers in several processes.

N_PROCS = 4
N_ITERS = 40


def _payload(idx):
    # Different sizes and contents per writer, so a torn or mixed entry cannot pass.
    return hashlib.sha256(bytes([idx])).digest() * (2000 + 100 * idx)


def _writer(directory, idx, shared_key, barrier, result):
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            from warpweave.pipeline import cache as C
            valid = {_payload(i) for i in range(N_PROCS)}
            barrier.wait(timeout=60)
            for it in range(N_ITERS):
                c = C.KernelCache(directory)
                c.put(shared_key, _payload(idx))
                own = C.make_key("own", idx, it)
                c.put(own, _payload(idx) + bytes([it]))
                # Read back through fresh instances: only complete, valid entries.
                got = C.KernelCache(directory).get(shared_key)
                assert got in valid, "shared entry invalid"
                assert C.KernelCache(directory).get(own) == _payload(idx) + bytes([it])
                if it % 8 == 0:
                    c2 = C.KernelCache(directory)
                    assert c2.get_or_build(C.make_key("built", it),
                                           lambda: _payload(idx)) in valid
                    assert c2.stats.corrupt == 0
            assert not [str(w.message) for w in rec], "warnings in writer"
        result.put((idx, "ok"))
    except BaseException as e:  # report to the parent
        result.put((idx, f"{type(e).__name__}: {e}"))
        raise


def test_concurrent_writers(tmp_path):
    directory = str(tmp_path / "shared")
    shared_key = C.make_key("shared")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_PROCS)
    result = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(directory, i, shared_key, barrier, result))
             for i in range(N_PROCS)]
    for p in procs:
        p.start()
    outcomes = dict(result.get(timeout=180) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert outcomes == {i: "ok" for i in range(N_PROCS)}
    assert [p.exitcode for p in procs] == [0] * N_PROCS

    assert_only_entries(directory)
    c = C.KernelCache(directory)
    assert c.get(shared_key) in {_payload(i) for i in range(N_PROCS)}
    for idx in range(N_PROCS):
        for it in range(N_ITERS):
            assert c.get(C.make_key("own", idx, it)) == _payload(idx) + bytes([it])
    # Every file on disk is a valid entry.
    n = 0
    for rel in all_files(directory):
        k = os.path.basename(rel)[:-4]
        assert C.KernelCache(directory).get(k) is not None
        n += 1
    assert n == 1 + N_PROCS * N_ITERS + len(range(0, N_ITERS, 8))
    assert c.stats.corrupt == 0


# ---------------------------------------------------------------------------------------
# Where the cache lives.

def test_cache_dir_honours_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("WARPWEAVE_CACHE_DIR", str(tmp_path / "mine"))
    assert C.cache_dir() == str(tmp_path / "mine")
    assert C.KernelCache().directory == str(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WARPWEAVE_CACHE_DIR", "relative")
    assert C.cache_dir() == str(tmp_path / "relative")


def test_cache_dir_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("WARPWEAVE_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.cache_dir() == str(tmp_path / "xdg" / "warpweave")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert C.cache_dir() == str(tmp_path / "home" / ".cache" / "warpweave")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert C.cache_dir() == str(tmp_path / "home" / ".cache" / "warpweave")
    monkeypatch.setenv("WARPWEAVE_CACHE_DIR", "")  # empty means unset
    assert C.cache_dir() == str(tmp_path / "home" / ".cache" / "warpweave")

    monkeypatch.setattr(sys, "platform", "darwin")
    assert C.cache_dir() == str(tmp_path / "home" / "Library" / "Caches" / "warpweave")

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert C.cache_dir() == os.path.join(str(tmp_path / "local"), "warpweave", "Cache")


def test_default_cache_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WARPWEAVE_CACHE_DIR", str(tmp_path / "one"))
    a = C.default_cache()
    assert C.default_cache() is a and a.directory == str(tmp_path / "one")
    k = key("default")
    a.put(k, b"in one")
    monkeypatch.setenv("WARPWEAVE_CACHE_DIR", str(tmp_path / "two"))
    b = C.default_cache()
    assert b is not a and b.directory == str(tmp_path / "two")
    assert b.get(k) is None
    monkeypatch.setenv("WARPWEAVE_CACHE_DIR", str(tmp_path / "one"))
    assert C.default_cache() is a and a.get(k) == b"in one"


def test_clear_removes_only_this_caches_entries(cdir):
    c = C.KernelCache(cdir)
    keys = [key("clear", i) for i in range(10)]
    for k in keys:
        c.put(k, b"x")
    # A leftover temp file of ours, and files that are not ours.
    sub = os.path.join(cdir, keys[0][:2])
    open(os.path.join(sub, "." + keys[0] + ".bin.abc123.tmp"), "wb").close()
    open(os.path.join(cdir, "README"), "w").close()
    os.mkdir(os.path.join(cdir, "other"))
    open(os.path.join(cdir, "other", "keep.bin"), "wb").close()
    c.clear()
    assert all(c.get(k) is None for k in keys)
    assert all_files(cdir) == ["README", os.path.join("other", "keep.bin")]
    c.put(keys[0], b"y")
    assert fresh_get(cdir, keys[0])[0] == b"y"
