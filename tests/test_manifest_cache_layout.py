"""The stat cache as a warm run reads it: its JSON layout taken apart without `json`, records checked when used,
and simple ignore rules matched without regexes — with the same answers as the JSON parser and the regexes."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from rhone_cli.artifacts import manifest as mf
from rhone_cli.artifacts.manifest import RuleSet, build_manifest, parse_rule

PAST = time.time() - 3600  # mtimes well before any cache write: not "racy"


def write(root: Path, rel: str, content: str = "x", *, mtime: float = PAST) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    os.utime(path, (mtime, mtime))
    return path


def cache_text(root: Path) -> str:
    return (root / ".rhone" / "manifest-cache.json").read_text()


def make_tree(root: Path) -> None:
    for i in range(12):
        write(root, f"d{i % 3}/sub/f{i}.txt", f"content {i}\n" * (i + 1))
    write(root, "top.txt", "top")
    write(root, "lib/ünïcode €.py", "print('hi')")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    make_tree(tmp_path)
    first = build_manifest(tmp_path)
    assert first.hashed_count == 14
    return tmp_path


def reference(root: Path):
    cold = build_manifest(root, use_cache=False)
    return cold.digest, cold.files


def test_the_written_cache_is_json_and_the_quick_reader_agrees_with_json(tree):
    text = cache_text(tree)
    data = json.loads(text)
    assert list(data) == ["version", "written_ns", "digest", "directories"]
    parsed = mf._parse_written_layout(text)
    assert parsed is not None  # the layout rhone writes is the one it reads quickly
    assert parsed == mf._parse_json(text)
    written, digest, directories = parsed
    assert (written, digest) == (data["written_ns"], data["digest"])
    # In memory the lines stay JSON-escaped; decoded, they are exactly the file's records.
    assert {p: json.loads(f'"{lines}"') for p, (lines, _h) in directories.items()} == {
        p: lines for p, (lines, _h) in data["directories"].items()
    }
    warm = build_manifest(tree)
    assert (warm.hashed_count, warm.digest, warm.files) == (0, *reference(tree))


def test_a_name_with_a_quote_is_read_back_through_json_and_still_cached(tmp_path):
    make_tree(tmp_path)
    write(tmp_path, 'd1/sub/say "hi".txt', "quoted")
    assert build_manifest(tmp_path).hashed_count == 15
    text = cache_text(tmp_path)
    assert '\\"hi\\"' in text and json.loads(text)  # valid JSON, the quote escaped
    assert mf._parse_written_layout(text) is None  # not a layout split on quotes can take apart
    warm = build_manifest(tmp_path)
    assert (warm.hashed_count, warm.digest, warm.files) == (0, *reference(tmp_path))
    assert 'd1/sub/say "hi".txt' in [entry["path"] for entry in warm.files]


@pytest.mark.parametrize("cut", [1, 10, 30, 60, 100, -200, -70, -3, -1])
def test_a_truncated_cache_is_rebuilt(tree, cut):
    cache_file = tree / ".rhone" / "manifest-cache.json"
    cache_file.write_text(cache_text(tree)[:cut])
    result = build_manifest(tree)
    assert (result.hashed_count, result.digest, result.files) == (14, *reference(tree))
    assert build_manifest(tree).hashed_count == 0  # and written again, whole
    assert mf._parse_written_layout(cache_text(tree)) is not None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('":["', '":[ "'),  # punctuation the layout never writes
        ('"],"', '"] ,"'),
        (',"digest":"', ',"digest": "'),
        ('"written_ns":', '"written_ns":-'),
        ('{"version":2', '{"version":3'),
        ('\\n","', '\\n\\\\","'),  # an escape the layout never writes
    ],
)
def test_an_edited_layout_is_read_by_json_or_not_at_all(tree, old, new):
    text = cache_text(tree)
    assert old in text
    edited = text.replace(old, new, 1)
    (tree / ".rhone" / "manifest-cache.json").write_text(edited)
    assert mf._parse_written_layout(edited) is None
    result = build_manifest(tree)
    assert (result.digest, result.files) == reference(tree)
    if old == '\\n","':  # valid JSON whose record no longer matches the stats: that directory is hashed again
        assert result.hashed_count == 1
    elif old in ('":["', '"],"', ',"digest":"'):  # still JSON, in another spacing: json reads it, nothing is hashed
        assert result.hashed_count == 0
        assert cache_text(tree) == edited  # and a cache that described the tree exactly is left as it was
        return
    else:  # not a cache of this version: everything is hashed
        assert result.hashed_count == 14
    assert build_manifest(tree).hashed_count == 0  # rebuilt, in the layout the quick reader takes apart
    assert mf._parse_written_layout(cache_text(tree)) is not None


@pytest.mark.parametrize(
    "damaged",
    [
        "[" * 100_000,  # json gives up with RecursionError (not a ValueError) on nesting this deep
        '{"version":2,"written_ns":1,"digest":null,"directories":' + "[" * 100_000,
    ],
)
def test_a_deeply_nested_cache_is_rebuilt_not_a_crash(tree, damaged):
    (tree / ".rhone" / "manifest-cache.json").write_text(damaged)
    result = build_manifest(tree)
    assert (result.hashed_count, result.digest, result.files) == (14, *reference(tree))
    assert mf._parse_written_layout(cache_text(tree)) is not None  # written again, whole
    assert build_manifest(tree).hashed_count == 0


def _symlinked_cache(tree: Path) -> None:
    cache_file = tree / ".rhone" / "manifest-cache.json"
    cache_file.rename(tree / ".rhone" / "elsewhere.json")
    cache_file.symlink_to("elsewhere.json")


def _symlinked_state_dir(tree: Path) -> None:
    elsewhere = tree.parent / f"{tree.name}-state"
    (tree / ".rhone").rename(elsewhere)
    (tree / ".rhone").symlink_to(elsewhere)


def _group_writable(tree: Path) -> None:
    (tree / ".rhone" / "manifest-cache.json").chmod(0o620)


def _another_users(tree: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    os.chown(tree / ".rhone" / "manifest-cache.json", 65534, -1)


def _fifo(tree: Path) -> None:
    cache_file = tree / ".rhone" / "manifest-cache.json"
    cache_file.unlink()
    os.mkfifo(cache_file)


@pytest.mark.parametrize("tamper", [_symlinked_cache, _symlinked_state_dir, _group_writable, _another_users, _fifo])
def test_a_cache_this_user_did_not_write_is_not_read(tree, tamper):
    """A cache says what unchanged files hold without reading them: one that is a symlink (or behind a symlinked
    .rhone, where the cache is never written), another user's, writable by others, or a fifo (which would block the
    read) is not read at all, even when its records match every file."""
    import threading

    tamper(tree)
    outcome: list = []
    reader = threading.Thread(target=lambda: outcome.append(build_manifest(tree)), daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert outcome, "build_manifest blocked on the cache file"
    result = outcome[0]
    assert (result.hashed_count, result.digest, result.files) == (14, *reference(tree))
    if tamper is _symlinked_state_dir:  # written neither there nor through it
        assert result.cache_warning and "not a directory" in result.cache_warning
        assert (tree / ".rhone").is_symlink()
        assert build_manifest(tree).hashed_count == 14
    else:  # replaced by a cache of this user's, read by the next run
        cache_file = tree / ".rhone" / "manifest-cache.json"
        assert cache_file.is_file() and not cache_file.is_symlink()
        assert stat.S_IMODE(cache_file.stat().st_mode) == 0o600 and cache_file.stat().st_uid == os.geteuid()
        assert build_manifest(tree).hashed_count == 0


def test_a_damaged_record_costs_only_its_directory(tree):
    """A record whose hashes are not hex, or one short, is not used: its directory's files are hashed again, the
    others still come from the cache, and the digest is the one of the files (never the cached one)."""
    data = json.loads(cache_text(tree))
    records = data["directories"]
    lines, hashes = records["d0/sub/"]
    files_there = lines.count("\n")
    for damaged in ("Z" + hashes[1:], hashes[:-64], hashes.upper()):
        records["d0/sub/"] = [lines, damaged]
        layout = {**data, "directories": records}
        encoded = json.dumps(layout, separators=(",", ":"), ensure_ascii=False)
        (tree / ".rhone" / "manifest-cache.json").write_text(encoded)
        assert mf._parse_written_layout(cache_text(tree)) is not None  # the quick reader took it apart
        result = build_manifest(tree)
        assert (result.hashed_count, result.digest, result.files) == (files_there, *reference(tree))
        assert build_manifest(tree).hashed_count == 0  # the record was rebuilt


def test_a_record_for_other_stats_is_not_trusted(tree):
    """Stale entries: a file whose size changed with its mtime kept, a removed file, a new one."""
    path = tree / "d1" / "sub" / "f1.txt"
    before = path.stat()
    path.write_text("a different length\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    (tree / "d2" / "sub" / "f2.txt").unlink()
    write(tree, "d2/sub/new.txt", "new")
    result = build_manifest(tree)
    assert (result.hashed_count, result.digest, result.files) == (2, *reference(tree))
    assert build_manifest(tree).hashed_count == 0


def test_a_retargeted_symlink_is_hashed_again(tmp_path):
    write(tmp_path, "a.txt", "same size A")
    write(tmp_path, "b.txt", "same size B")
    os.symlink("a.txt", tmp_path / "link.txt")
    assert build_manifest(tmp_path).hashed_count == 3
    assert build_manifest(tmp_path).hashed_count == 0
    os.unlink(tmp_path / "link.txt")
    os.symlink("b.txt", tmp_path / "link.txt")
    result = build_manifest(tmp_path)
    assert (result.hashed_count, result.digest, result.files) == (1, *reference(tmp_path))
    assert {e["path"]: e["sha256"] for e in result.files}["link.txt"] == {e["path"]: e["sha256"] for e in result.files}[
        "b.txt"
    ]


# -- simple rules: the same answers as their regexes ----------------------------------------------------------------
SIMPLE = [".git", "node_modules/", "*.pyc", ".env.*", "*", "build*", "/dist", "a/b/c", "!keep.pyc", "/docs/"]
NOT_SIMPLE = ["a?c", "[ab].txt", "**/x", "*a*", "x/**", "\\!bang", "*.py[co]", "trailing\\ "]
SUBJECTS = [
    ".git", ".gitignore", "x.git", "node_modules", "a.pyc", ".pyc", "a.pyc.bak", ".env", ".env.local", ".envrc",
    "build", "builder", "rebuild", "dist", "dist/x", "a/dist", "a/b/c", "a/b/c/d", "x/a/b/c", "keep.pyc", "docs",
    "ünï.pyc", "a b.pyc", "",
]  # fmt: skip


@pytest.mark.parametrize("pattern", SIMPLE)
@pytest.mark.parametrize("base", ["", "sub/"])
def test_simple_rules_match_as_their_regex_does(pattern, base):
    rule = parse_rule(pattern, base=base)
    anchored = "/" in pattern.rstrip("/")
    assert (rule.simple is not None) == (anchored or not base), rule.simple  # a nested name rule needs its regex
    for subject in [*SUBJECTS, *(base + s for s in SUBJECTS)]:
        name = subject.rpartition("/")[2]
        for is_dir in (False, True):
            expected = not (rule.dir_only and not is_dir) and (
                rule.regex.fullmatch(name if rule.basename else subject) is not None
            )
            assert rule.matches(subject, name, is_dir) is expected, (pattern, base, subject, is_dir)


@pytest.mark.parametrize("pattern", NOT_SIMPLE)
def test_other_rules_keep_their_regex(pattern):
    rule = parse_rule(pattern)
    assert rule.simple is None and rule.expression is not None


def test_names_matching_holds_every_name_a_rule_decides(tmp_path):
    rules = [parse_rule(p) for p in SIMPLE] + [parse_rule("/sub/only", base="")]
    for ruleset in (RuleSet(rules), RuleSet([*rules, parse_rule("a?c")])):  # simple only, and with a regex
        for prefix in ("", "a/", "a/b/", "sub/"):
            names = [s.rpartition("/")[2] for s in SUBJECTS if s] + ["only", "abc"]
            joined = "/" + "/".join(names) + "/"
            found = ruleset.names_matching(names, prefix, joined)
            decided = {n for n in names if ruleset.decide(prefix + n, n, False) is not None}
            assert decided <= found, (prefix, decided - found)


# -- the plain-form fast path, with str paths ----------------------------------------------------------------------
def manifest_into_the_project(project: Path, stdout: str, stderr: str, options: list[str], environ: dict) -> None:
    """`rhone -C project artifact manifest [options] > project/stdout 2> project/stderr`, run from its parent (the
    console script's fast path); it must succeed."""
    import subprocess
    import sys

    run = "import sys; from rhone_cli.entry import run; sys.argv = ['rhone', *sys.argv[1:]]; run()"
    with open(project / stdout, "wb") as out, open(project / stderr, "wb") as err:
        proc = subprocess.run(
            [sys.executable, "-c", run, "-C", project.name, "artifact", "manifest", *options],
            stdout=out,
            stderr=err,
            cwd=project.parent,
            env=environ,
            timeout=60,
        )
    assert proc.returncode == 0, (project / stderr).read_text()


def test_the_fast_path_leaves_its_own_redirected_output_out(tmp_path, base_environ):
    """`rhone artifact manifest --json > out.json 2> err.log` inside the project (the console script's fast path,
    which works on str paths): both files are named in a warning and left out, the rest is the cold manifest."""

    project = tmp_path / "project"
    make_tree(project)
    expected = build_manifest(project, use_cache=False)
    manifest_into_the_project(project, "out.json", "err.log", ["--json"], base_environ)
    document = json.loads((project / "out.json").read_text())
    assert (document["digest"], document["manifest"]["files"]) == (expected.digest, expected.files)
    log = (project / "err.log").read_text()
    assert "leaving out.json out of the manifest: it is this command's stdout" in log
    assert "leaving err.log out of the manifest: it is this command's stderr" in log


def test_the_counts_leave_out_the_commands_own_redirected_output(tmp_path, base_environ):
    """`rhone artifact manifest > out.txt 2> err.log` run twice inside the project: the shell truncates both files
    before each run, so the walk hashes them each time; they are left out of the manifest, and out of the count of
    files hashed too (it once counted them, and a warm run could say "-2 from the stat cache")."""

    project = tmp_path / "project"
    make_tree(project)
    printed = []
    for _ in range(2):
        manifest_into_the_project(project, "out.txt", "err.log", [], base_environ)
        assert "leaving out.txt out of the manifest" in (project / "err.log").read_text()
        printed.append([line for line in (project / "out.txt").read_text().splitlines() if "hashed" in line])
    assert printed == [["hashed: 14 (0 from the stat cache)"], ["hashed: 0 (14 from the stat cache)"]]
