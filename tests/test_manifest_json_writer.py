"""`rhone artifact manifest --json` piped: the document is encoded without `json` (services/artifacts.py,
`Manifest.files_json`), and a run that knows the digest writes the file list kept beside the stat cache.

What these tests hold it to: the bytes are exactly what `json.dumps(document, separators=(",", ":"))` wrote before
(the document of `build_manifest(...).document`), for hostile names too; a kept list that is not whole, not this
user's, or behind a symlink is never read; `--no-cache` keeps none; only the current manifest's list is kept.
"""

from __future__ import annotations

import io
import json
import os
import stat

import pytest

from rhone_cli.artifacts.manifest import (
    CACHE_FILE,
    FILES_JSON_PREFIX,
    STATE_DIR,
    _files_json,
    _files_json_name,
    build_manifest,
)
from rhone_cli.environment import Environment
from rhone_cli.output import Output
from tests.test_startup_imports import probe_with_stderr

# Names a file may have on disk, chosen to need every kind of escape json.dumps (ensure_ascii) makes: a quote, the
# key text itself, Latin-1, a character outside the BMP (a surrogate pair), separators JSON allows but JavaScript
# did not, a BOM, spaces, and a name of 254 UTF-8 bytes.
HOSTILE_NAMES = [
    'quote"d.txt',
    '{"path":"x"}.json',
    "ünïcödé.txt",
    "emoji-\U0001f600.txt",
    "line\u2028para\u2029.txt",
    "\ufeffbom.txt",
    "sp ace & 'single'.txt",
    "é" * 127,
    "plain.txt",
    "a b",  # with the directory "a": "a b" < "a.txt" < "a/…" < "a0", the order of paths, not of their encoding
    "a.txt",
    "a0",
]


def reference_document(root) -> dict:
    """The --json document of `rhone artifact manifest`, made the way it was before (dicts; `hashed` is set by
    `expected_output`)."""
    manifest = build_manifest(root, use_cache=False)
    document = {
        "digest": manifest.digest,
        "root": manifest.root,
        "file_count": manifest.file_count,
        "total_size": manifest.total_size,
        "hashed": None,
        "manifest": manifest.document,
    }
    return document


def expected_output(document: dict, hashed: int) -> str:
    """What the document was written as on a pipe before: json.dumps, compact, ASCII."""
    return json.dumps({**document, "hashed": hashed}, sort_keys=False, default=str, separators=(",", ":")) + "\n"


@pytest.fixture
def hostile_tree(tmp_path):
    root = tmp_path / 'pröject "root"'  # the root is in the document too
    for name in HOSTILE_NAMES:
        (root / "a").mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"content of {name}\n")
        (root / "a" / name).write_text(f"nested {name}\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "run.sh", 0o755)
    an_hour_ago = os.stat(root / "run.sh").st_mtime - 3600  # not "racy": the stat cache trusts these files
    for path in [root, *root.rglob("*")]:
        os.utime(path, (an_hour_ago, an_hour_ago))
    return root


def kept_lists(root) -> list[str]:
    return sorted(name for name in os.listdir(root / STATE_DIR) if name.startswith(FILES_JSON_PREFIX))


def test_files_json_is_json_dumps_byte_for_byte_for_any_string():
    # Rows no walk would make too (control characters, a backslash, a lone surrogate from a name that is not
    # UTF-8): the encoder is json's own, so it is exact whatever the row holds.
    paths = [*HOSTILE_NAMES, "ctl\x01\x1f\x7f\x9f", "back\\slash", "lone\udcff", "tab\tnew\nline", "x" * 1024, ""]
    rows = [(path, index * 1000, ("644", "755")[index % 2], f"{index:064x}") for index, path in enumerate(paths)]
    files = [{"path": path, "size": size, "mode": mode, "sha256": sha} for path, size, mode, sha in rows]
    assert _files_json(rows) == json.dumps(files, separators=(",", ":")).encode()
    assert _files_json([]) == b"[]"


@pytest.mark.parametrize("how", ["entry", "main"])
def test_the_piped_document_is_the_old_encoding_cold_warm_and_without_cache(base_environ, hostile_tree, how):
    root = hostile_tree
    document = reference_document(root)
    assert document["file_count"] == 2 * len(HOSTILE_NAMES) + 1  # every hostile name was listed, none refused
    command = ["-C", str(root), "artifact", "manifest", "--json"]

    status, cold, stderr, _ = probe_with_stderr(base_environ, root.parent, command, how)
    assert (status, stderr) == (0, "")
    assert cold == expected_output(document, hashed=document["file_count"])
    digest_hex = document["digest"].removeprefix("sha256:")
    assert kept_lists(root) == [f"{FILES_JSON_PREFIX}{digest_hex}.json"]
    cache = (root / STATE_DIR / CACHE_FILE).read_bytes()
    kept = (root / STATE_DIR / kept_lists(root)[0]).read_bytes()

    status, warm, stderr, _ = probe_with_stderr(base_environ, root.parent, command, how)
    assert (status, stderr) == (0, "")
    assert warm == expected_output(document, hashed=0)
    assert json.loads(warm)["manifest"] == json.loads(cold)["manifest"] == document["manifest"]
    # The warm run changed nothing in the state directory.
    assert (root / STATE_DIR / CACHE_FILE).read_bytes() == cache
    assert kept_lists(root) == [f"{FILES_JSON_PREFIX}{digest_hex}.json"]
    assert (root / STATE_DIR / kept_lists(root)[0]).read_bytes() == kept

    status, uncached, stderr, _ = probe_with_stderr(base_environ, root.parent, [*command, "--no-cache"], how)
    assert (status, stderr) == (0, "")
    assert uncached == cold


def test_a_warm_run_writes_the_kept_list_as_it_is(base_environ, hostile_tree):
    # The kept list is trusted as the stat cache is (this user's own file): proof that the warm run reads it rather
    # than rendering the rows again.
    build_manifest(hostile_tree).files_json()
    path = hostile_tree / STATE_DIR / kept_lists(hostile_tree)[0]
    text = path.read_bytes()
    start = text.index(b'"sha256":"') + len(b'"sha256":"')
    changed = text[:start] + b"0" * 64 + text[start + 64 :]
    assert changed != text
    path.write_bytes(changed)
    status, warm, _stderr, _ = probe_with_stderr(
        base_environ, hostile_tree, ["artifact", "manifest", "--json"], "entry"
    )
    assert status == 0
    assert json.loads(warm)["manifest"]["files"] == json.loads(changed)


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda path: path.write_bytes(path.read_bytes()[:-200]), id="truncated"),
        pytest.param(lambda path: path.write_bytes(path.read_bytes().rsplit(b',{"path":', 1)[0] + b"]"), id="short"),
        pytest.param(lambda path: path.write_bytes(b"[]"), id="empty"),
        pytest.param(
            lambda path: path.write_bytes(path.read_bytes().replace(b"\\u00fc", "ü".encode())), id="not-ascii"
        ),
        pytest.param(lambda path: os.chmod(path, 0o620), id="group-writable"),
        pytest.param(lambda path: os.chmod(path, 0o602), id="world-writable"),
    ],
)
def test_a_kept_list_that_is_not_whole_or_not_ours_is_not_read_and_is_replaced(hostile_tree, spoil):
    expected = build_manifest(hostile_tree).files_json()  # renders it and keeps it
    (name,) = kept_lists(hostile_tree)
    spoil(hostile_tree / STATE_DIR / name)
    cache = (hostile_tree / STATE_DIR / CACHE_FILE).read_bytes()
    manifest = build_manifest(hostile_tree)
    assert manifest.hashed_count == 0  # warm: the digest came from the cache
    assert manifest.files_json() == expected
    kept = hostile_tree / STATE_DIR / name
    assert kept_lists(hostile_tree) == [name]
    assert kept.read_bytes() == expected and stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert (hostile_tree / STATE_DIR / CACHE_FILE).read_bytes() == cache


def test_a_symlinked_kept_list_is_not_followed(hostile_tree, tmp_path):
    expected = build_manifest(hostile_tree).files_json()
    (name,) = kept_lists(hostile_tree)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(b"[]")
    (hostile_tree / STATE_DIR / name).unlink()
    (hostile_tree / STATE_DIR / name).symlink_to(elsewhere)
    assert build_manifest(hostile_tree).files_json() == expected
    assert elsewhere.read_bytes() == b"[]"  # the link was replaced, its target untouched
    assert not (hostile_tree / STATE_DIR / name).is_symlink()


def test_a_symlinked_state_directory_is_neither_read_nor_written(hostile_tree, tmp_path):
    build_manifest(hostile_tree)  # the cache (and its digest)
    elsewhere = tmp_path / "elsewhere"
    (hostile_tree / STATE_DIR).rename(elsewhere)
    (hostile_tree / STATE_DIR).symlink_to(elsewhere)
    manifest = build_manifest(hostile_tree)
    assert manifest.files_json() == _files_json([tuple(entry.values()) for entry in manifest.files])
    assert [name for name in os.listdir(elsewhere) if name.startswith(FILES_JSON_PREFIX)] == []


def test_only_the_current_manifests_list_is_kept(hostile_tree):
    first = build_manifest(hostile_tree)
    first.files_json()
    (hostile_tree / "new.txt").write_text("new\n")
    os.utime(hostile_tree / "new.txt", (0, 0))
    second = build_manifest(hostile_tree)
    assert second.digest != first.digest
    assert json.loads(second.files_json()) == second.files
    assert kept_lists(hostile_tree) == [_files_json_name(second.digest)]


def test_no_cache_keeps_no_list(hostile_tree):
    manifest = build_manifest(hostile_tree, use_cache=False)
    assert json.loads(manifest.files_json()) == manifest.files
    assert not (hostile_tree / STATE_DIR).exists()


def test_a_manifest_left_incomplete_keeps_no_list(hostile_tree):
    # Without a digest stored in the cache (and none computed), nothing names a kept list.
    build_manifest(hostile_tree)
    manifest = build_manifest(hostile_tree)
    manifest._digest = None
    assert json.loads(manifest.files_json()) == manifest.files
    assert kept_lists(hostile_tree) == []


class _Binary(io.TextIOWrapper):
    """A text stream over bytes, like sys.stdout on a pipe."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8")

    def isatty(self) -> bool:
        return False


def _output(stdout) -> Output:
    env = Environment(stdout=stdout, stderr=io.StringIO(), environ={})
    env.options.json = True
    return Output(env)


def test_an_encoded_document_goes_to_the_byte_stream_after_the_text_written_before():
    stdout = _Binary()
    out = _output(stdout)
    assert out.compact_json
    stdout.write("text first ")  # buffered in the text layer: it must not come after the bytes
    out.encoded_json_document([b'{"a":', b"1}\n"])
    stdout.flush()
    assert stdout.buffer.getvalue() == b'text first {"a":1}\n'
    with pytest.raises(RuntimeError):
        out.encoded_json_document([b"{}\n"])
    assert stdout.buffer.getvalue() == b'text first {"a":1}\n'


def test_an_encoded_document_is_masked_like_every_write():
    stdout = _Binary()
    out = _output(stdout)
    out.env.secrets.add("hunter22")
    out.encoded_json_document([b'{"root":"/home/hunter22/app"}\n'])
    stdout.flush()
    assert stdout.buffer.getvalue() == b'{"root":"/home/********/app"}\n'


def test_an_encoded_document_on_a_text_stream():
    stdout = io.StringIO()
    out = _output(stdout)
    out.encoded_json_document([b'{"a":', b"1}\n"])
    assert stdout.getvalue() == '{"a":1}\n'


def test_a_terminal_or_jq_gets_the_document_from_json_dumps():
    stdout = _Binary()
    out = _output(stdout)
    out.env.options.jq = object()
    assert not out.compact_json
    out.env.options.jq = None
    stdout.isatty = lambda: True
    assert not out.compact_json
