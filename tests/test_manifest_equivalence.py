"""The manifest's fast paths (parallel hashing, the stat cache's warm walk, the compact document) must not change a
single byte of what is listed or of the digest: a fixed tree's document and digest were computed with the
single-threaded builder before any of them existed, and every path is checked against them."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from rhone_cli.artifacts import manifest as mf
from rhone_cli.artifacts.manifest import build_manifest, canonical_bytes
from rhone_cli.errors import RhoneError

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


def test_cold_then_warm_then_one_change(fixture_tree):
    cold = build_manifest(fixture_tree)
    assert cold.hashed_count == FIXTURE_FILES
    assert_is_the_fixture(cold)
    warm = build_manifest(fixture_tree)
    assert warm.hashed_count == 0
    assert_is_the_fixture(warm)
    assert warm.files == cold.files


def test_unreadable_file_is_reported_whatever_the_hashing_order(fixture_tree):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    for rel in ("pkg3/m003.py", "sizes/s65536.bin"):
        os.chmod(fixture_tree / rel, 0)
    with pytest.raises(RhoneError) as info:
        build_manifest(fixture_tree, use_cache=False)
    assert (info.value.code, info.value.exit_code) == ("unreadable_path", 2)
