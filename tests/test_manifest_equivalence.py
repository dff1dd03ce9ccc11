"""The manifest's fast paths (parallel hashing, the stat cache's warm walk, the compact document) must not change a
single byte of what is listed or of the digest: a fixed tree's document and digest were computed with the
single-threaded builder before any of them existed, and every path is checked against them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rhone_cli.artifacts import _hashing
from rhone_cli.artifacts import manifest as mf
from rhone_cli.artifacts.manifest import build_manifest, canonical_bytes
from rhone_cli.environment import Environment
from rhone_cli.errors import RhoneError
from rhone_cli.main import main
from rhone_cli.output import Output

PAST = time.time() - 3600

# Computed with the single-threaded builder of `main` before parallel hashing and the new warm walk (see the module
# docstring): the sha256 of the canonical document, and its digest (the same value, prefixed).
FIXTURE_FILES = 386
FIXTURE_SIZE = 4_984_114
FIXTURE_DIGEST = "sha256:57ca616a9bfc5e44385e6e4bb37cd50ac702e29fe1b3aa140134bdd30a2440af"

# Sizes around the boundaries the hashing paths care about: empty, hashlib's 2 KiB GIL threshold, a small-file read
# limit, the 1 MiB chunk.
EDGE_SIZES = (0, 1, 2047, 2048, 2049, 4095, 4096, 4097, 65535, 65536, 65537, (1 << 20) - 1, 1 << 20, (1 << 20) + 1)


def content(index: int, size: int) -> bytes:
    """Deterministic bytes, the same on every machine and Python version."""
    block = hashlib.sha256(index.to_bytes(4, "big")).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def make_fixture_tree(root: Path) -> None:
    """Nested directories, unicode names, exec bits, a symlink inside the root, ignore files, and enough small files
    to cross any batch size."""
    for index in range(360):
        directory = root / f"pkg{index % 6}" / ("deep/er" if index % 4 == 0 else "")
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"m{index:03d}.{('py', 'js', 'txt')[index % 3]}"
        path.write_bytes(content(index, (index * 997) % 9000))
        os.chmod(path, 0o755 if index % 11 == 0 else 0o644)
    for index, size in enumerate(EDGE_SIZES):
        (root / "sizes").mkdir(exist_ok=True)
        (root / "sizes" / f"s{size}.bin").write_bytes(content(1000 + index, size))
    for index, name in enumerate(("é", "naïve.txt", "日本語.md", "a b", "Z", "a-b", "a.b")):
        (root / "names").mkdir(exist_ok=True)
        (root / "names" / name).write_bytes(content(2000 + index, 10 + index))
    (root / "bin").mkdir()
    (root / "bin" / "start").write_bytes(b"#!/bin/sh\nexec python app.py\n")
    os.chmod(root / "bin" / "start", 0o755)
    (root / "app.py").write_bytes(b"print('hi')\n")
    (root / "linked.py").symlink_to("app.py")
    (root / ".gitignore").write_text("*.log\nbuild/\n!keep.log\n")
    (root / "pkg1" / ".rhoneignore").write_text("m001.js\n")
    for rel in ("x.log", "keep.log", "build/out.bin", ".env", ".git/HEAD", "__pycache__/a.pyc"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"ignored unless re-included\n")
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(dirpath, name), (PAST, PAST), follow_symlinks=False)


@pytest.fixture
def fixture_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    make_fixture_tree(root)
    return root


def assert_is_the_fixture(result: mf.Manifest) -> None:
    assert (result.file_count, result.total_size) == (FIXTURE_FILES, FIXTURE_SIZE)
    assert "sha256:" + hashlib.sha256(canonical_bytes(result.document)).hexdigest() == FIXTURE_DIGEST
    assert result.digest == FIXTURE_DIGEST


def test_the_fixture_tree_has_the_digest_computed_before_the_fast_paths(fixture_tree):
    assert_is_the_fixture(build_manifest(fixture_tree, use_cache=False))


def test_without_directory_descriptors_or_readv_the_same_manifest(fixture_tree, monkeypatch):
    # What a platform without scandir(fd) and os.readv (Windows) runs.
    monkeypatch.setattr(mf, "_SCANDIR_FD", False)
    monkeypatch.setattr(_hashing, "readv", _hashing._read_into)
    assert_is_the_fixture(build_manifest(fixture_tree))
    assert_is_the_fixture(build_manifest(fixture_tree))


def test_cold_then_warm_then_one_change(fixture_tree):
    cold = build_manifest(fixture_tree)
    assert cold.hashed_count == FIXTURE_FILES
    assert_is_the_fixture(cold)
    warm = build_manifest(fixture_tree)
    assert warm.hashed_count == 0
    assert_is_the_fixture(warm)
    assert warm.files == cold.files
    changed = fixture_tree / "pkg2" / "m002.txt"
    changed.write_bytes(b"changed")
    os.utime(changed, (PAST + 5, PAST + 5))
    after = build_manifest(fixture_tree)
    assert after.hashed_count == 1
    assert after.document == build_manifest(fixture_tree, use_cache=False).document
    assert after.digest == build_manifest(fixture_tree, use_cache=False).digest != FIXTURE_DIGEST
    assert {e["path"] for e in after.files} == {e["path"] for e in cold.files}


def hashing_order(root: Path, monkeypatch) -> list[str]:
    """The paths `hash_file` is called with, in order, when every file is hashed on the calling thread."""
    calls: list[str] = []
    real = _hashing.hash_file
    monkeypatch.setattr(_hashing, "BATCH_SIZE", 10**9)  # never enough files for threads

    def recording(path, buffer, *, nofollow):
        calls.append(path)
        return real(path, buffer, nofollow=nofollow)

    monkeypatch.setattr(_hashing, "hash_file", recording)
    build_manifest(root, use_cache=False)
    monkeypatch.undo()
    return calls


def test_hashing_runs_on_worker_threads_and_leaves_none_behind(fixture_tree, monkeypatch):
    threads_used: set[int] = set()
    real = _hashing.hash_file

    def recording(path, buffer, *, nofollow):
        threads_used.add(threading.get_ident())
        return real(path, buffer, nofollow=nofollow)

    monkeypatch.setattr(_hashing, "hash_file", recording)
    before = threading.active_count()
    result = build_manifest(fixture_tree, use_cache=False)
    assert_is_the_fixture(result)
    assert result.hashed_count == FIXTURE_FILES
    assert threads_used and threading.get_ident() not in threads_used  # the walk's thread only lists
    assert len(threads_used) <= _hashing.worker_count()
    assert threading.active_count() == before


def hashing_threads(root: Path, monkeypatch, *, large_batch_bytes: int) -> set[int]:
    """The worker threads a cold manifest of `root` starts, with batches counted large from `large_batch_bytes`."""
    started: set[int] = set()
    real = _hashing.ParallelHasher._work

    def recording(self):
        started.add(threading.get_ident())
        return real(self)

    monkeypatch.setattr(_hashing.ParallelHasher, "_work", recording)
    monkeypatch.setattr(_hashing, "LARGE_BATCH_BYTES", large_batch_bytes)
    before = threading.active_count()
    assert_is_the_fixture(build_manifest(root, use_cache=False))
    assert threading.active_count() == before  # every worker was waited for, those started late too
    monkeypatch.undo()
    return started


def test_small_files_are_hashed_on_one_worker_and_large_ones_on_more(fixture_tree, monkeypatch):
    # More threads hashing small files only wait for the GIL; the fixture's files (a few bytes) are small.
    assert len(hashing_threads(fixture_tree, monkeypatch, large_batch_bytes=_hashing.LARGE_BATCH_BYTES)) == 1
    # Counted as large (every batch is), they start up to worker_count() workers, each waited for.
    assert FIXTURE_FILES // _hashing.BATCH_SIZE >= 4  # batches enough for each worker to start the next
    assert len(hashing_threads(fixture_tree, monkeypatch, large_batch_bytes=0)) == _hashing.worker_count()


def test_the_first_failure_in_walk_order_is_reported_whichever_thread_finishes_first(fixture_tree, monkeypatch):
    order = hashing_order(fixture_tree, monkeypatch)
    assert len(order) == FIXTURE_FILES
    early, late = order[40], order[-40]  # in different batches, so on different threads or one after the other
    real = _hashing.hash_file
    late_failed = threading.Event()

    def failing(path, buffer, *, nofollow):
        if path == early:
            late_failed.wait(5)  # the later file fails first
            raise PermissionError(13, "Permission denied")
        if path == late:
            late_failed.set()
            raise PermissionError(13, "Permission denied")
        return real(path, buffer, nofollow=nofollow)

    monkeypatch.setattr(_hashing, "hash_file", failing)
    before = threading.active_count()
    for _ in range(3):
        late_failed.clear()
        with pytest.raises(RhoneError) as info:
            build_manifest(fixture_tree)
        assert (info.value.code, info.value.exit_code) == ("unreadable_path", 2)
        assert info.value.message == f"{os.path.relpath(early, fixture_tree)}: cannot read: Permission denied"
    assert late_failed.is_set()
    assert threading.active_count() == before
    assert not (fixture_tree / ".rhone").exists()  # nothing was cached from a failed run


def test_a_walk_error_after_hashing_started_stops_the_workers(fixture_tree, monkeypatch):
    order = hashing_order(fixture_tree, monkeypatch)
    # A fifo in the directory listed last: by then the first batches are on the workers.
    fifo = Path(order[-1]).parent / "zz-fifo"
    os.mkfifo(fifo)
    before = threading.active_count()
    with pytest.raises(RhoneError) as info:
        build_manifest(fixture_tree, use_cache=False)
    assert (info.value.code, info.value.exit_code) == ("unsafe_path", 2)
    assert "not a regular file (a fifo)" in info.value.message
    assert threading.active_count() == before


def test_a_file_replaced_by_a_symlink_after_listing_is_refused_on_a_worker(fixture_tree, monkeypatch):
    order = hashing_order(fixture_tree, monkeypatch)
    victim = Path(order[-3])
    real = _hashing.hash_file

    def swapping(path, buffer, *, nofollow):
        if path == str(victim):  # between the listing and the open: what O_NOFOLLOW is for
            victim.unlink()
            victim.symlink_to(fixture_tree / "app.py")
        return real(path, buffer, nofollow=nofollow)

    monkeypatch.setattr(_hashing, "hash_file", swapping)
    with pytest.raises(RhoneError) as info:
        build_manifest(fixture_tree, use_cache=False)
    assert (info.value.code, info.value.exit_code) == ("unsafe_path", 2)
    assert "changed into a symlink while the manifest was being built" in info.value.message


def test_a_warm_run_loads_neither_openssl_nor_threads(fixture_tree):
    build_manifest(fixture_tree)
    probe = (
        "import sys; from rhone_cli.artifacts.manifest import build_manifest; "
        f"m = build_manifest({str(fixture_tree)!r}); print(m.hashed_count, m.digest); "
        "print(sorted(n for n in ('hashlib', '_hashlib', 'threading', 'queue') if n in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [f"0 {FIXTURE_DIGEST}", "[]"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_rhone(args: list[str], *, stdout: io.StringIO, cwd: Path) -> tuple[int, str]:
    env = Environment(stdin=io.StringIO(), stdout=stdout, stderr=io.StringIO(), environ=dict(os.environ), cwd=cwd)
    return main(args, env), stdout.getvalue()


def test_command_json_is_compact_when_piped_and_indented_at_a_terminal(fixture_tree):
    code, piped = run_rhone(["artifact", "manifest", "--no-cache", "--json"], stdout=io.StringIO(), cwd=fixture_tree)
    assert code == 0
    assert piped.count("\n") == 1 and piped.endswith("}\n") and ", " not in piped and '": ' not in piped
    code, shown = run_rhone(["artifact", "manifest", "--no-cache", "--json"], stdout=_Terminal(), cwd=fixture_tree)
    assert code == 0
    assert shown.startswith('{\n  "digest": ')
    assert json.loads(piped) == json.loads(shown)
    assert json.loads(piped)["digest"] == FIXTURE_DIGEST
    assert json.loads(piped)["manifest"] == build_manifest(fixture_tree, use_cache=False).document


def test_json_documents_keep_control_characters_escaped_without_the_terminal_filter(tmp_path):
    # The terminal filter is skipped for JSON documents (it costs more than encoding a large one): json.dumps escapes
    # every character outside printable ASCII, so no raw control character can reach the terminal, and the text
    # inside the document is kept exactly.
    text = "a\x7fb\x1b[2Jc\r\x9b1m\x07"
    for stream in (io.StringIO(), _Terminal()):
        out = Output(Environment(stdin=io.StringIO(), stdout=stream, stderr=io.StringIO(), environ={}, cwd=tmp_path))
        out.json_document({"text": text})
        written = stream.getvalue()
        assert all(" " <= char <= "~" for char in written.replace("\n", "")), repr(written)
        assert json.loads(written) == {"text": text}
