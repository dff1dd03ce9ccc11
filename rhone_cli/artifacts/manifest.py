"""The artifact manifest: every file of a directory tree with its size, mode and sha256, and the tree's digest.

    {"version": 1, "files": [{"path": "app.py", "size": 12, "mode": "644", "sha256": "<64 hex>"}, ...]}

- `path` is the normalized, root-relative POSIX path (valid UTF-8, no `..`, no empty segments, no backslash or
  control character); `files` is sorted by path (code point order, which is also UTF-8 byte order);
- `mode` is "755" when the owner's exec bit is set, else "644": nothing else of the permission bits (umask) counts;
- the digest is `sha256:` + sha256 of the canonical JSON (`canonical_bytes`): sorted keys, no whitespace, UTF-8.

So the same tree gives the same digest on every machine, whatever the creation order, mtimes or umask.

What is listed: every regular file under the root, minus the ignore rules, applied in this order (the last matching
rule decides, as in git): built-in defaults (`DEFAULT_IGNORES`, which keep `.env` files out), then every
`.gitignore` from the root down to the file's directory (a deeper file's rules apply below it and win over its
parents'), then every `.rhoneignore` the same way (gitignore syntax; they win over .gitignore, so `!dist/` there
uploads a gitignored build output), then rhone.toml's `build.exclude`; and only files matching rhone.toml's
`build.include` (default `**`) are kept. A directory that is ignored is not entered, so (as in git) nothing inside
it can be re-included. `<root>/.rhone/` (rhone's own state, including the stat cache) is never listed. `explain`
says which rule decided a path.

Refused (`RhoneError` code `unsafe_path`, exit 2): symlinks resolving outside the root (or into `<root>/.rhone/`),
broken and looping symlinks, symlinked directories that lead back to one of their ancestors, names that are not
valid UTF-8 or contain a backslash or a control character (or, at the top, look like a Windows drive such as `C:`),
fifos, sockets and devices. A symlink inside the root is
listed under its own path with its target's content and exec bit (a symlinked directory is walked).

Hashing streams in 1 MiB chunks through one reused buffer per thread, so memory stays bounded whatever the file
sizes; a tree with more than a few dozen files to hash is hashed on a worker thread while the walk goes on (on a
few when the files are large, `_hashing.py`), and the result is the same whichever thread finishes first (the first
failure in walk order is the one reported). The walk lists each directory once through a file descriptor and
`lstat`s its files relative to it, as `find` does (no full path resolved per file). A stat cache
(`<root>/.rhone/manifest-cache.json`) keeps each file's (size, mtime_ns, ctime_ns, inode, st_mode) and sha256,
one record per directory, so unchanged files are not read again, and a directory whose files all kept their stat is
known as a whole, without a lookup per file; entries whose mtime is within `RACY_NS` of the moment the cache was
written are never trusted (git's "racy clean" problem: a file changed again within the timestamp granularity). The
cache also keeps the digest of the manifest it describes, reused only when every file came from the cache and every
entry was used (so the document is exactly the one that digest was computed from); beside it, the file list of
that manifest as compact JSON (`Manifest.files_json`), named by the digest, which a warm `--json` run writes out as
it is. Only a cache (or list) this user's runs can have written is read: a regular file (not a symlink, nor behind a
symlinked `.rhone/`) owned by this user (or root) that group and others may not write.

A warm run is mostly start-up and one `lstat` per file, so its path imports no more than it needs (see the imports
below): simple ignore rules match without regexes, and the cache is read without the `json` module (`_Cache`).

Standard library only (no pydantic, rich or httpx): it runs on the CLI's hot path and in the build worker.
"""

from __future__ import annotations

import errno
import os
import stat
import time

# Only builtin modules above: this module is on the start-up path of a warm `rhone artifact manifest`, where `re`
# (with `enum`, `functools` and `collections`), `json`, and `rhone_cli.errors` (an IntEnum) would cost more CPU time
# than listing thousands of unchanged files. They are imported where they are needed: `re` for gitignore patterns
# beyond exact names and `*.ext`/`name*` (`_regex`, `Rule.regex`), `json` for documents and a cache in another
# layout, the errors when something is refused. `typing` and `collections.abc` are for the type checker only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

    from rhone_cli.errors import RhoneError

MANIFEST_VERSION = 1
MAX_FILES = 100_000
MAX_PATH_LENGTH = 1024
RACY_NS = 2_000_000_000  # entries modified this close to (or after) the cache write are rehashed

IGNORE_FILE = ".rhoneignore"
STATE_DIR = ".rhone"
CACHE_FILE = "manifest-cache.json"
CACHE_VERSION = 2

# Gitignore lines. `.git` without the trailing slash: a submodule's or worktree's `.git` is a file naming a
# machine-specific gitdir, which must not end up in an artifact either.
DEFAULT_IGNORES: tuple[str, ...] = (
    ".git",
    ".rhone/",
    ".venv/",
    "venv/",
    "__pycache__/",
    "*.pyc",
    ".DS_Store",
    "node_modules/",
    # Local secrets stay out unless a .gitignore, .rhoneignore or build.exclude re-includes one by name (`!.env.x`).
    ".env",
    ".env.*",
    ".envrc",
)
GIT_IGNORE_FILE = ".gitignore"

_HEX_DIGITS = b"0123456789abcdef"
# Compiled on first use (`_regex`): importing `re` is most of the start-up a warm run can avoid.
_PATTERNS = {
    "sha256_hex": "[0-9a-f]{64}",
    "record_line": "([^\0\n]*)\0([0-9]+):[0-9]+:[0-9]+:[0-9]+:([0-9]+)\n",  # (name, size, st_mode)
    # C0 and C1 control characters, DEL, backslash, and lone surrogates (how Python spells bytes that are not UTF-8).
    "bad_name_char": "[\x00-\x1f\x7f-\x9f\\\\\ud800-\udfff]",
}
_compiled: dict[str, re.Pattern[str]] = {}


def _regex(name: str) -> re.Pattern[str]:
    pattern = _compiled.get(name)
    if pattern is None:
        import re

        pattern = _compiled[name] = re.compile(_PATTERNS[name])
    return pattern


def _is_hex_digest(text: object) -> bool:
    """64 lowercase hex digits (without `re`)."""
    return isinstance(text, str) and len(text) == 64 and not text.encode().translate(None, _HEX_DIGITS)


def _looks_like_drive(name: str) -> bool:
    """`C:...`, absolute on Windows: refused as a path's first segment."""
    return name[1:2] == ":" and name[:1].isascii() and name[:1].isalpha()


def _has_bad_name_char(text: str) -> bool:
    """Whether `text` holds a character no manifest path may hold. Every such character is unprintable or a
    backslash, so a printable text without a backslash (nearly every name) needs no regex."""
    if text.isprintable() and "\\" not in text:
        return False
    return _regex("bad_name_char").search(text) is not None


_SCANDIR_FD = os.scandir in os.supports_fd
_O_DIRECTORY = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


# -- canonical form -------------------------------------------------------------------------------------------------
def canonical_bytes(doc: Any) -> bytes:
    """The canonical JSON encoding the digest is computed over: sorted keys, no whitespace, UTF-8."""
    import json

    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def digest_of(doc: Any) -> str:
    """`sha256:<hex>` of the canonical JSON of a manifest document."""
    import hashlib  # here: a warm run reuses the cached digest and never loads OpenSSL

    return "sha256:" + hashlib.sha256(canonical_bytes(doc)).hexdigest()


def _canonical_manifest_bytes(rows: list[tuple[str, int, str, str]]) -> bytes:
    """`canonical_bytes` of `{"version": 1, "files": [...]}` for the (path, size, mode, sha256) rows of `Manifest` (an
    int size; ASCII mode and sha256), in half the time: the keys are written in their sorted order and the path is
    escaped by the same function `json.dumps(..., ensure_ascii=False)` uses."""
    from json.encoder import encode_basestring

    entry = '{"mode":"%s","path":%s,"sha256":"%s","size":%d}'
    body = ",".join([entry % (mode, encode_basestring(path), sha, size) for path, size, mode, sha in rows])
    return f'{{"files":[{body}],"version":{MANIFEST_VERSION}}}'.encode()


def _ascii_json_string_encoder() -> Callable[[str], str]:
    """The function `json.dumps` (with its default `ensure_ascii`) encodes a string with, without importing `json`
    (with `re` and `enum`, more start-up than a warm run's walk): the C accelerator `json` itself uses."""
    try:
        from _json import encode_basestring_ascii
    except ImportError:  # an interpreter without the accelerator: json's own Python version, the same bytes
        from json.encoder import py_encode_basestring_ascii as encode_basestring_ascii
    return encode_basestring_ascii


def json_string(text: str) -> str:
    """`text` as `json.dumps(text)` writes it: quoted, ASCII, everything else escaped."""
    return _ascii_json_string_encoder()(text)


def _files_json(rows: list[tuple[str, int, str, str]]) -> bytes:
    """The "files" list of (path, size, mode, sha256) rows exactly as `json.dumps(files, separators=(",", ":"))`
    writes it (keys in the entries' order, every path escaped by json's own function, ASCII), without a dict per
    file or the `json` module: for 50,000 files, building and encoding the dicts cost more than the walk."""
    quote = _ascii_json_string_encoder()
    # An f-string (sizes are ints: str() is json's number) formats faster than `%`.
    body = ",".join(
        [f'{{"path":{quote(p)},"size":{size},"mode":"{mode}","sha256":"{sha}"}}' for p, size, mode, sha in rows]
    )
    return f"[{body}]".encode()


def mode_of(st_mode: int) -> str:
    """Only the owner's exec bit is recorded: "755" or "644"."""
    return _MODES[st_mode & stat.S_IXUSR]


_MODES = {0: "644", stat.S_IXUSR: "755"}


class Manifest:
    """A manifest: `files` are its entries (dicts: path, size, mode, sha256), sorted by path.

    `build_manifest` hands over rows instead, (path, size, mode, sha256) tuples, or a function that makes them, and
    the entries are made only when asked for: a warm run printing the digest and the counts makes none of them."""

    def __init__(
        self,
        root: str,
        files: list[dict[str, Any]] | None = None,
        hashed_count: int = 0,  # files read and hashed by this run (the rest came from the stat cache)
        cache_warning: str | None = None,  # why the stat cache could not be written, when it could not
        *,
        rows: list[tuple[str, int, str, str]] | Callable[[], list[tuple[str, int, str, str]]] | None = None,
        digest: str | None = None,  # preset when the stat cache already knows it
        file_count: int | None = None,  # given with a function making the rows
        total_size: int | None = None,
        state_dir: str | None = None,  # where its stat cache lives (None: built without one)
        hashed_watched: frozenset[str] = frozenset(),  # those of build_manifest's `watch` paths this run hashed
    ) -> None:
        if (files is None) == (rows is None):
            raise TypeError("a Manifest is made of either files or rows")
        self.root, self.hashed_count, self.cache_warning = root, hashed_count, cache_warning
        self._files, self._rows, self._digest = files, rows, digest
        self._file_count, self._total_size = file_count, total_size
        self._state_dir = state_dir
        self.hashed_watched = hashed_watched

    def __repr__(self) -> str:
        return f"Manifest(root={self.root!r}, file_count={self.file_count}, hashed_count={self.hashed_count})"

    def _row_list(self) -> list[tuple[str, int, str, str]]:
        if callable(self._rows):
            self._rows = self._rows()
        if self._rows is None:
            return [(f["path"], f["size"], f["mode"], f["sha256"]) for f in self._files]
        return self._rows

    @property
    def files(self) -> list[dict[str, Any]]:
        if self._files is None:
            self._files = [
                {"path": path, "size": size, "mode": mode, "sha256": sha256}
                for path, size, mode, sha256 in self._row_list()
            ]
        return self._files

    @property
    def document(self) -> dict[str, Any]:
        return {"version": MANIFEST_VERSION, "files": self.files}

    def files_json(self) -> bytes:
        """The "files" list as compact JSON, byte for byte what `json.dumps(self.files, separators=(",", ":"))`
        writes (ASCII).

        A manifest built with the stat cache whose digest is already known keeps this text beside the cache, named
        by the digest (`_read_files_json`): the same digest is the same document, so a warm run (which knows the
        digest from the cache) writes it out without making a row per file. The first run that needs it renders it
        and leaves it there."""
        if self._state_dir is None or self._digest is None:
            return _files_json(self._row_list())
        text = _read_files_json(self._state_dir, self._digest, self.file_count)
        if text is None:
            text = _files_json(self._row_list())
            _write_files_json(self._state_dir, self._digest, text)
        return text

    @property
    def digest(self) -> str:
        if self._digest is None:
            import hashlib

            self._digest = "sha256:" + hashlib.sha256(_canonical_manifest_bytes(self._row_list())).hexdigest()
        return self._digest

    @property
    def file_count(self) -> int:
        if self._file_count is None:
            self._file_count = len(self._files if self._rows is None else self._row_list())
        return self._file_count

    @property
    def total_size(self) -> int:
        if self._total_size is None:
            if self._rows is None:
                self._total_size = sum(entry["size"] for entry in self._files)
            else:
                self._total_size = sum([row[1] for row in self._row_list()])
        return self._total_size


# -- gitignore-style patterns ---------------------------------------------------------------------------------------
# The classes below are plain classes, not dataclasses: each @dataclass costs about 0.7 ms of start-up, as much as
# a warm manifest of a hundred files.
class Rule:
    """One gitignore line. `basename` rules (no slash in the pattern) match an entry's name at any depth; the
    others match the whole root-relative path.

    Most lines are a name (`node_modules/`, `/build`), `*.ext` or `name*`: those are matched with string
    comparisons (`simple`) and their regex is compiled only if something asks for it, so a tree whose rules are all
    of that kind is walked without importing `re`."""

    __slots__ = ("_regex", "basename", "dir_only", "expression", "negate", "simple", "source", "text")

    def __init__(
        self,
        text: str,
        expression: str | None,  # the regex (for `fullmatch`); None for a `simple` rule, made when first asked for
        negate: bool,
        dir_only: bool,
        basename: bool,
        source: str = "",  # where it was written: file:line
        simple: tuple[str, str] | None = None,  # ("exact" | "suffix" | "prefix", text) matched without a regex
    ) -> None:
        self.text, self.negate, self.dir_only, self.basename = text, negate, dir_only, basename
        self.source, self.simple, self.expression = source, simple, expression
        self._regex: re.Pattern[str] | None = None

    @property
    def regex(self) -> re.Pattern[str]:
        if self._regex is None:
            import re

            if self.expression is None:
                kind, text = self.simple
                template = {"exact": "{}", "suffix": "[^/]*{}", "prefix": "{}[^/]*"}[kind]
                self.expression = template.format(re.escape(text))
            self._regex = re.compile(self.expression, re.DOTALL)
        return self._regex

    def __repr__(self) -> str:
        return f"Rule({self.text!r}, source={self.source!r})"

    def matches(self, path: str, name: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        subject = name if self.basename else path
        if self.simple is not None:
            kind, text = self.simple
            if kind == "exact":
                return subject == text
            return subject.endswith(text) if kind == "suffix" else subject.startswith(text)
        return self.regex.fullmatch(subject) is not None


def _escaped_at(text: str, index: int) -> bool:
    """Whether text[index] is preceded by an odd number of backslashes."""
    count = 0
    while index - count - 1 >= 0 and text[index - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def _class_to_regex(body: str) -> str:
    """The inside of a `[...]` glob class as a regex class body (its `!`/`^` negation already removed)."""
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            i += 1
            char = body[i]
        elif char == "-" and out and i + 1 < len(body):
            out.append("-")  # a range between the previous and the next character
            i += 1
            continue
        out.append("\\" + char if char in "\\]^[-&~|" else char)
        i += 1
    return "".join(out)


def glob_to_regex(pattern: str) -> str:
    """Translate a gitignore glob (without its `!`, leading `/` or trailing `/`) to a regex for `fullmatch`.

    `*` and `?` never match `/`; `**` as a whole segment matches any number of segments (`**/x`, `a/**/x`, `a/**`);
    `[...]` is a class (`[!...]`/`[^...]` negated) that never matches `/`; a backslash quotes the next character.
    """
    import re

    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            whole_segment = (i == 0 or pattern[i - 1] == "/") and (j == n or pattern[j] == "/")
            if j - i >= 2 and whole_segment:
                if j == n:
                    out.append(".*" if i == 0 else ".+")  # `**` is everything; `a/**` is everything inside a
                    i = j
                else:
                    out.append("(?:.*/)?")  # `**/`: zero or more leading segments
                    i = j + 1
            else:
                out.append("[^/]*")
                i = j
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1  # a leading `]` is a member
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            if j >= n:  # no closing bracket: a literal `[`
                out.append(re.escape(char))
                i += 1
                continue
            body = pattern[i + 1 : j]
            negated = body[:1] in ("!", "^")
            if negated:
                body = body[1:]
            klass = _class_to_regex(body)
            out.append(f"[^/{klass}]" if negated else f"(?!/)[{klass}]")
            i = j + 1
        elif char == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


def parse_rule(line: str, *, source: str = "<rules>", base: str = "") -> Rule | None:
    """One gitignore line as a `Rule`, or None for blank lines and comments. Raises ValueError for a bad pattern.

    `base` is the root-relative directory (ending in "/") of the ignore file the line comes from: its rules match
    only below it, anchored ones relative to it."""
    text = line.rstrip("\r\n")
    if not text or text.startswith("#"):
        return None
    end = len(text)
    while end > 0 and text[end - 1] == " " and not _escaped_at(text, end - 1):
        end -= 1  # trailing spaces are ignored unless quoted with a backslash
    pattern = text[:end]
    negate = pattern.startswith("!")
    if negate:
        pattern = pattern[1:]
    dir_only = False
    while pattern.endswith("/") and not _escaped_at(pattern, len(pattern) - 1):
        dir_only = True
        pattern = pattern[:-1]
    anchored = "/" in pattern  # a slash at the start or in the middle anchors the pattern to the root
    pattern = pattern.lstrip("/")
    if not pattern:
        return None
    basename = not anchored and not base
    simple = _simple_form(pattern, base, anchored=anchored)
    if simple is not None:
        return Rule(text, None, negate, dir_only, basename, source, simple)
    import re

    expression = glob_to_regex(pattern)
    if base:  # a nested file's rules: a path rule under `base`; a name rule at any depth below it
        expression = re.escape(base) + ("" if anchored else "(?:.*/)?") + expression
    rule = Rule(text, expression, negate, dir_only, basename, source)
    try:
        rule.regex  # noqa: B018 - compiled now, so that a bad pattern is refused where it is read
    except re.error as error:
        raise ValueError(f"{source}: invalid pattern {text!r}: {error}") from None
    return rule


_GLOB_CHARACTERS = frozenset("*?[\\")


def _simple_form(pattern: str, base: str, *, anchored: bool) -> tuple[str, str] | None:
    """The string comparison `pattern` amounts to, when it is one: without glob characters, an anchored path
    (`/build`, `a/b`, under `base` for a nested ignore file) or a name (root ignore files) is "exact"; for a name,
    `*.ext` is a "suffix" and `name*` a "prefix" (`*` matches any run of characters but `/`, which a name never
    holds). None for everything else (a nested file's unanchored rules, classes, `?`, `**`), matched by regex."""
    if base and not anchored:
        return None
    if not _GLOB_CHARACTERS.intersection(pattern):
        return ("exact", base + pattern)
    if anchored:
        return None
    inner = pattern[1:] if pattern[:1] == "*" else pattern[:-1] if pattern[-1:] == "*" else None
    if inner is None or _GLOB_CHARACTERS.intersection(inner):
        return None
    return ("suffix", inner) if pattern[:1] == "*" else ("prefix", inner)


def parse_rules(lines: Iterable[str], *, source: str = "<rules>", base: str = "") -> list[Rule]:
    rules = []
    for number, line in enumerate(lines, 1):
        rule = parse_rule(line, source=f"{source}:{number}", base=base)
        if rule is not None:
            rules.append(rule)
    return rules


class RuleSet:
    """An ordered list of rules where the last matching rule decides (git's semantics)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)
        self._reversed = self.rules[::-1]
        # Most entries match no rule at all: one call per kind answers that (a set lookup and two C string methods
        # when the rules are all simple, else one combined regex).
        name_rules, path_rules = [r for r in self.rules if r.basename], [r for r in self.rules if not r.basename]
        self.any_name, self.any_path = _any_match(name_rules), _any_match(path_rules)
        # Simple rules only: (exact names, suffixes, prefixes) and exact paths; else None.
        self._simple_names = _simple_parts(name_rules)
        self._simple_paths = _simple_parts(path_rules)

    def names_matching(self, names: list[str], prefix: str, joined: str) -> set[str]:
        """Among the `names` of the entries of the directory `prefix` (`joined`: "/" + "/".join(names) + "/"), a
        set holding every one that some rule matches, by name or by path (and perhaps a few more): the names that
        need `decide`. For simple rules it is mostly set operations and substring searches of `joined`."""
        found: set[str] = set()
        if self.any_name is not None:
            simple = self._simple_names
            if simple is None:
                found.update(filter(self.any_name, names))
            else:
                exact, suffixes, prefixes = simple
                found.update(exact.intersection(names))
                if any(suffix + "/" in joined for suffix in suffixes) or any("/" + p in joined for p in prefixes):
                    found.update(filter(self.any_name, names))
        if self.any_path is not None:
            if self._simple_paths is None:
                any_path = self.any_path
                found.update(name for name in names if any_path(prefix + name))
            else:
                below = [path[len(prefix) :] for path in self._simple_paths[0] if path.startswith(prefix)]
                found.update(set(below).intersection(names))
        return found

    def decide(self, path: str, name: str, is_dir: bool) -> bool | None:
        """True when the last matching rule is positive, False when it is a negation, None when none matches."""
        rule = self.deciding_rule(path, name, is_dir)
        return None if rule is None else not rule.negate

    def deciding_rule(self, path: str, name: str, is_dir: bool) -> Rule | None:
        """The last rule that matches, which decides."""
        if not ((self.any_name and self.any_name(name)) or (self.any_path and self.any_path(path))):
            return None
        for rule in self._reversed:
            if rule.matches(path, name, is_dir):
                return rule
        return None

    def decide_with_ancestors(self, path: str) -> bool | None:
        """Like `decide` for a file, where a rule also matches when it matches one of the file's directories."""
        segments = path.split("/")
        candidates = [("/".join(segments[: k + 1]), segments[k], True) for k in range(len(segments) - 1)]
        candidates.append((path, segments[-1], False))
        for rule in self._reversed:
            if any(rule.matches(p, nm, d) for p, nm, d in candidates):
                return not rule.negate
        return None


def _simple_parts(rules: list[Rule]) -> tuple[frozenset[str], tuple[str, ...], tuple[str, ...]] | None:
    """(exact texts, suffixes, prefixes) of rules that are all simple; None when one is not."""
    if any(rule.simple is None for rule in rules):
        return None
    forms = [rule.simple for rule in rules]
    return (
        frozenset(text for kind, text in forms if kind == "exact"),
        tuple(text for kind, text in forms if kind == "suffix"),
        tuple(text for kind, text in forms if kind == "prefix"),
    )


def _any_match(rules: list[Rule]) -> Callable[[str], object] | None:
    """A function whose result is true when one of `rules` matches the text given (not minding `dir_only`), or None
    when there are no rules."""
    if not rules:
        return None
    simple = _simple_parts(rules)
    if simple is None:
        import re

        return re.compile("|".join(f"(?:{rule.regex.pattern})" for rule in rules), re.DOTALL).fullmatch
    exact, suffixes, prefixes = simple

    def any_simple(text: str) -> bool:
        return text in exact or text.endswith(suffixes) or text.startswith(prefixes)

    return any_simple


def _is_match_everything(patterns: Sequence[str]) -> bool:
    return all(p.strip() in ("**", "/**", "**/*", "*") for p in patterns) and bool(patterns)


# -- errors ---------------------------------------------------------------------------------------------------------
def _display(path: str) -> str:
    """A path as it can be printed: bytes that are not UTF-8 as \\xNN, control characters escaped."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text if text.isprintable() and "\\" not in path else repr(text)


def _usage_error(message: str, code: str, **details: Any) -> RhoneError:
    """A `RhoneError` with exit code 2 (imported here: `rhone_cli.errors` costs start-up time a warm run needs not
    pay)."""
    from rhone_cli.errors import ExitCode, RhoneError

    return RhoneError(message, code=code, exit_code=ExitCode.USAGE, **details)


def _unsafe(path: str, reason: str, *, hint: str | None = None) -> RhoneError:
    return _usage_error(
        f"{_display(path)}: {reason}",
        "unsafe_path",
        hint=hint or f"remove it, or add it to {IGNORE_FILE} (or build.exclude in rhone.toml)",
        details={"path": _display(path), "reason": reason},
    )


def _name_problem(name: str) -> str | None:
    if not _has_bad_name_char(name):
        return None
    match = _regex("bad_name_char").search(name)
    if match is None:
        return None
    char = match.group()
    if "\ud800" <= char <= "\udfff":
        return "file name is not valid UTF-8"
    if char == "\\":
        return "file name contains a backslash"
    return f"file name contains a control character (U+{ord(char):04X})"


def _check_name(rel: str, name: str, *, top: bool) -> None:
    """Refuse a name that cannot be a manifest path segment."""
    problem = _name_problem(name)
    if problem:
        raise _unsafe(rel, problem, hint=f"rename it, or add it to {IGNORE_FILE}")
    if len(rel) > MAX_PATH_LENGTH:
        raise _unsafe(rel, f"path is longer than {MAX_PATH_LENGTH} characters")
    if top and _looks_like_drive(name):
        raise _unsafe(rel, "a top-level name like a Windows drive ('C:') reads as an absolute path")


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


# -- the stat cache -------------------------------------------------------------------------------------------------
# One record per directory: [lines, hashes], where lines holds "name\0size:mtime_ns:ctime_ns:inode:st_mode\n" for each
# of its listed files, in the order the directory lists them, and hashes their sha256s, concatenated in the same
# order. A warm run stats a directory's files and compares that one string with the record: when it is equal (and no
# mtime is racy), every file of the directory is known without a lookup per file, and the record is all the cache
# holds in memory for them.
#
# In memory (and in the file, which is JSON) the lines are kept as their JSON string escape, `name\u0000key\n` with
# `"` in a name as `\"` (names hold no backslash or control character, so nothing else is escaped): the walk builds
# the same escaped text from the stats, and the cache is read without decoding, copying or scanning its strings (for
# a small tree, decoding them cost as much as the walk). A record is checked when it is used: its hashes must be
# 64 hex digits per line, else the directory is hashed again as if it had no record.
def _stat_key(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_mode}"


_LINE_END = "\\n"  # "\n" and "\0" as JSON escapes: the separators of the lines of a record
_NAME_END = "\\u0000"


def _escaped(name: str) -> str:
    """A name (or prefix) as it is written inside a JSON string: it holds no backslash or control character."""
    return name.replace('"', '\\"') if '"' in name else name


def _unescaped(name: str) -> str:
    return name.replace('\\"', '"') if "\\" in name else name


def _record_line(name: str, key: str) -> str:
    return f"{_escaped(name)}{_NAME_END}{key}{_LINE_END}"


def _usable_hashes(hashes: str, lines: int) -> bool:
    """A record's hashes: 64 lowercase hex digits for each of its lines. A damaged or edited record is not used."""
    return len(hashes) == 64 * lines and not hashes.encode().translate(None, _HEX_DIGITS)


class _Cache:
    __slots__ = ("digest", "directories", "file_count", "trusted_before")

    def __init__(
        self, directories: dict[str, list[str]], trusted_before: int, digest: str | None = None, file_count: int = 0
    ) -> None:
        # {root-relative prefix ("" or ending in "/"): [escaped lines, hashes]}
        self.directories = directories
        self.trusted_before = trusted_before  # entries whose mtime is later than this are "racy" and never trusted
        self.digest = digest  # the digest of the manifest made of exactly these entries, when they were complete
        self.file_count = file_count  # entries in all records

    def known(self, prefix: str) -> dict[str, tuple[str, str]]:
        """{name: (stat key, sha256)} of the record of the directory `prefix` (empty when there is none, or when it
        is not usable)."""
        record = self.directories.get(prefix)
        if record is None:
            return {}
        lines, hashes = record
        entries = lines.split(_LINE_END)
        if entries.pop() != "" or not _usable_hashes(hashes, len(entries)):
            return {}
        known = {}
        for index, line in enumerate(entries):
            name, _, key = line.partition(_NAME_END)
            known[_unescaped(name)] = (key, hashes[64 * index : 64 * index + 64])
        return known


def _record_rows(prefix: str, record: list[str]) -> list[tuple[str, int, str, str]]:
    """The manifest rows of a directory record whose every file was found unchanged (so it is well formed: it is
    exactly the text the walk made of the stats)."""
    lines, hashes = record
    rows = []
    for index, line in enumerate(lines.split(_LINE_END)[:-1]):
        name, _, key = line.partition(_NAME_END)
        size, _, _, _, st_mode = key.split(":")
        sha256 = hashes[64 * index : 64 * index + 64]
        rows.append((prefix + _unescaped(name), int(size), _MODES[int(st_mode) & 0o100], sha256))
    return rows


def _load_cache(path: str) -> _Cache:
    """The cache at `path` (empty when it is missing, unreadable, malformed, or not one this user wrote)."""
    try:
        if not stat.S_ISDIR(os.lstat(os.path.dirname(path)).st_mode):  # a symlinked state dir: `_write_cache` too
            return _Cache({}, 0)
        with open(os.open(path, _O_CACHE_READ), "rb") as f:
            if not _written_by_this_user(os.fstat(f.fileno())):
                return _Cache({}, 0)
            text = f.read().decode("utf-8")
        parsed = _parse_written_layout(text)
        if parsed is None:  # another layout (a cache edited, or written by something else): the JSON parser decides
            parsed = _parse_json(text)
        if parsed is not None:
            written, digest, directories = parsed
            valid_digest = isinstance(digest, str) and digest.startswith("sha256:") and _is_hex_digest(digest[7:])
            file_count = sum([len(record[1]) for record in directories.values()]) // 64
            return _Cache(directories, written - RACY_NS, digest if valid_digest else None, file_count)
    # RecursionError: `json` gives up on deeply nested arrays (`[[[[…`), which a damaged file can hold.
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        pass
    return _Cache({}, 0)


# O_NONBLOCK: a fifo put in the cache's place must not block the open (it is then refused as not a regular file).
_O_CACHE_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def _written_by_this_user(st: os.stat_result) -> bool:
    """Whether the cache file can be one this user's runs wrote (0600, through a temporary file renamed into place).
    A cache is trusted to say what unchanged files hold, so one that is not a regular file, belongs to another user
    (who could write it in a group-writable checkout), or that group or others may write is not read. Root's files
    are: root can write anything anyway."""
    if not stat.S_ISREG(st.st_mode):
        return False
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None:  # Windows: no owner to compare
        return True
    return st.st_uid in (geteuid(), 0) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _parse_json(text: str) -> tuple[int, object, dict[str, list[str]]] | None:
    """(written_ns, digest, directories with escaped lines) of a cache in any JSON layout; None when it is not one."""
    import json

    data = json.loads(text)
    written, directories = data["written_ns"], data["directories"]
    if (
        data["version"] != CACHE_VERSION
        or type(written) is not int
        or not isinstance(directories, dict)
        or not all(
            type(record) is list and len(record) == 2 and type(record[0]) is str and type(record[1]) is str
            for record in directories.values()
        )
    ):
        return None
    escaped = {
        prefix: [_escaped(lines).replace("\0", _NAME_END).replace("\n", _LINE_END), hashes]
        for prefix, (lines, hashes) in directories.items()
    }
    return written, data.get("digest"), escaped


_WRITTEN_HEAD = f'{{"version":{CACHE_VERSION},"written_ns":'


def _parse_written_layout(text: str) -> tuple[int, str | None, dict[str, list[str]]] | None:
    """(written_ns, digest, directories) of a cache in exactly the layout `_write_cache` writes (compact JSON, keys
    in its order), taken apart with one `str.split`: `json` costs more start-up than the whole walk of a small
    tree. None for anything else, which `json` then parses (or refuses).

    Unless a string holds a `\"` (a name with a quote), every `"` delimits a string, so the text splits into strings
    and the punctuation between them, which must be exactly what the layout puts there. The lines stay escaped (see
    above); a prefix holds no escape (a backslash in one makes it a prefix no directory has)."""
    parts = text.split('"')
    # {"version":2,"written_ns":N,"digest":"sha256:…" (or null),"directories":{"prefix":["lines","hashes"],…}}
    if len(parts) < 9 or parts[:6] != ["{", "version", f":{CACHE_VERSION},", "written_ns", parts[4], "digest"]:
        return None
    written = parts[4][1:-1]
    if parts[4][:1] != ":" or parts[4][-1:] != "," or not (written.isascii() and written.isdigit()):
        return None
    if parts[6] == ":null,":
        digest, rest = None, parts[7:]
    elif parts[6] == ":" and parts[8:9] == [","]:
        digest, rest = parts[7], parts[9:]
    else:
        return None
    if rest[:1] != ["directories"]:
        return None
    strings, punctuation = rest[2::2], rest[1::2]
    records = len(strings) // 3
    expected = [":{", *[":[", ",", "],"] * records]
    expected[-1] = "]}}" if records else ":{}}"
    if punctuation != expected or len(strings) != 3 * records or any([part[-1:] == "\\" for part in strings]):
        return None
    records_of = zip(strings[0::3], strings[1::3], strings[2::3], strict=True)
    return int(written), digest, {prefix: [lines, hashes] for prefix, lines, hashes in records_of}


def _replace_atomically(directory: str, name: str, data: bytes) -> None:
    """Make `directory/name` hold `data`, all or nothing: a temporary file beside it, then a rename (a reader sees the
    old file or the new one, never a part). Raises OSError; the temporary file does not outlive a failure."""
    import contextlib
    import tempfile

    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with open(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, os.path.join(directory, name))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _write_cache(root: str, directories: dict[str, list[str]], digest: str | None) -> str | None:
    """Write the cache atomically (`_replace_atomically`); the reason when it could not be written."""
    state = os.path.join(root, STATE_DIR)
    try:
        try:
            st = os.lstat(state)
        except FileNotFoundError:
            os.mkdir(state)
        else:
            if not stat.S_ISDIR(st.st_mode):  # a symlink (which could lead anywhere) or a file
                return f"{state} is not a directory; the stat cache was not written"
        # Compact JSON, {"version", "written_ns", "digest", "directories"} in this order: what `_parse_written_layout`
        # reads back. Written as text: the lines are already JSON-escaped, and prefixes and hashes need no escape
        # but a name's `"`.
        records = ",".join(
            [f'"{_escaped(prefix)}":["{lines}","{hashes}"]' for prefix, (lines, hashes) in directories.items()]
        )
        digest_value = "null" if digest is None else f'"{digest}"'
        encoded = f'{_WRITTEN_HEAD}{time.time_ns()},"digest":{digest_value},"directories":{{{records}}}}}'.encode()
        _replace_atomically(state, CACHE_FILE, encoded)
        return None
    except OSError as error:
        return f"the stat cache could not be written ({error.strerror or error})"


# The rendered "files" list of the manifest whose digest is <hex>, beside the stat cache (`Manifest.files_json`).
FILES_JSON_PREFIX, FILES_JSON_SUFFIX = "manifest-files-", ".json"


def _files_json_name(digest: str) -> str:
    return FILES_JSON_PREFIX + digest.removeprefix("sha256:") + FILES_JSON_SUFFIX


def _read_files_json(state_dir: str, digest: str, file_count: int) -> bytes | None:
    """The kept "files" text of the manifest `digest` (of `file_count` files), or None when there is none this
    user's runs can have written (the stat cache's own rule) or it is not whole: ASCII, a list, one entry per file
    (`{"path":` cannot occur inside an encoded path, whose quotes are escaped)."""
    try:
        if not stat.S_ISDIR(os.lstat(state_dir).st_mode):
            return None
        with open(os.open(os.path.join(state_dir, _files_json_name(digest)), _O_CACHE_READ), "rb") as f:
            if not _written_by_this_user(os.fstat(f.fileno())):
                return None
            text = f.read()
    except OSError:
        return None
    whole = text[:1] == b"[" and text[-1:] == b"]" and text.isascii() and text.count(b'{"path":') == file_count
    return text if whole else None


def _write_files_json(state_dir: str, digest: str, text: bytes) -> None:
    """Keep `text` as the "files" text of the manifest `digest` (atomically, like the cache), and only it: the
    others describe manifests of earlier states of the tree. Nothing is said when it cannot be written: it only
    saves a later run some time, and the stat cache's own note already names a state directory that cannot be
    written."""
    import contextlib

    name = _files_json_name(digest)
    try:
        if not stat.S_ISDIR(os.lstat(state_dir).st_mode):  # a symlink (which could lead anywhere) or a file
            return
        _replace_atomically(state_dir, name, text)
        for other in os.listdir(state_dir):
            if other.startswith(FILES_JSON_PREFIX) and other.endswith(FILES_JSON_SUFFIX) and other != name:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(state_dir, other))
    except OSError:
        pass


# -- errors of the walk and of hashing ------------------------------------------------------------------------------
def _unreadable(rel: str, error: OSError) -> RhoneError:
    return _usage_error(
        f"{_display(rel)}: cannot read: {error.strerror or error}",
        "unreadable_path",
        hint=f"fix its permissions, or add it to {IGNORE_FILE}",
    )


def _hashing_failed(rel: str, error: BaseException) -> RhoneError:
    """The error to report for a file that could not be hashed (`_hashing.hash_file`'s exceptions)."""
    if isinstance(error, OSError):
        if error.errno == errno.ELOOP:  # opened with O_NOFOLLOW: the entry was replaced by a symlink since listed
            return _unsafe(rel, "changed into a symlink while the manifest was being built")
        return _unreadable(rel, error)
    st_mode = getattr(error, "st_mode", None)
    if st_mode is not None:  # _hashing.NotRegularFile: replaced by a fifo or a device since listed
        return _unsafe(rel, f"not a regular file ({_kind(st_mode)})")
    raise error


def _too_many(message: str) -> RhoneError:
    return _usage_error(
        message,
        "too_many_files",
        hint=f"exclude what the artifact does not need with {IGNORE_FILE} or build.exclude",
    )


def _kind(st_mode: int) -> str:
    if stat.S_ISFIFO(st_mode):
        return "a fifo"
    if stat.S_ISSOCK(st_mode):
        return "a socket"
    if stat.S_ISCHR(st_mode) or stat.S_ISBLK(st_mode):
        return "a device"
    return "a special file"


# -- the walk -------------------------------------------------------------------------------------------------------
class _Walk:
    def __init__(
        self,
        root: str,
        ignore: _Layers,
        include: RuleSet | None,
        cache: _Cache | None,
        watch: frozenset[str] = frozenset(),
    ) -> None:
        self.root = root  # real (resolved) absolute path
        self.ignore = ignore  # the rules in effect at the root (before its own ignore files)
        self.include = include  # None: everything is included
        self.cache = cache  # None: no stat cache (hash everything)
        self.rows: list[tuple[str, int, str, str]] = []  # (path, size, mode, sha256) of files listed one by one
        # Directories whose record matched as a whole: (prefix, record); their rows are made only when asked for.
        self.unchanged: list[tuple[str, list[str]]] = []
        self.unchanged_files = 0
        self.unchanged_size = 0
        self.to_hash: list[tuple[str, str, bool]] = []  # listed, not hashed yet (the hasher's jobs)
        self.from_cache = 0  # files whose sha256 came from the cache
        # What the next cache will hold for the directories that did not match as a whole: {prefix: {name: (stat key,
        # sha256)}} and {prefix: names in listing order}.
        self.remembered: dict[str, dict[str, tuple[str, str]]] = {}
        self.order: dict[str, list[str]] = {}
        self._known: dict[str, dict[str, tuple[str, str]]] = {}
        self.directories = 0
        self.hasher: Any = None  # a _hashing.ParallelHasher, made when the first file needs hashing
        self.watch = watch  # root-relative paths whose hashing (rather than listing from the cache) is noted
        self.hashed_watched: list[str] = []
        self.state_dir = os.path.join(root, STATE_DIR)

    @property
    def file_count(self) -> int:
        return len(self.rows) + self.unchanged_files + len(self.to_hash)

    def run(self) -> int:
        """List the tree, then wait for the files the cache did not know to be hashed; the number hashed."""
        root_st = os.stat(self.root)
        # (real directory, root-relative prefix ending in "/" or "", (dev, inode) of it and its ancestors, the ignore
        # rules of its parent)
        stack: list[tuple[str, str, frozenset[tuple[int, int]], _Layers]] = [
            (self.root, "", frozenset({(root_st.st_dev, root_st.st_ino)}), self.ignore)
        ]
        try:
            while stack:
                directory, prefix, ancestors, layers = stack.pop()
                self.directories += 1
                if self.directories > MAX_FILES:  # symlinked directories can multiply paths without any cycle
                    raise _too_many(f"more than {MAX_FILES} directories under {self.root}")
                fd, listing = _open_directory(directory, prefix)
                try:
                    self._scan(listing, directory, prefix, ancestors, stack, layers)
                finally:
                    if fd is not None:
                        os.close(fd)
        except BaseException:
            if self.hasher is not None:
                self.hasher.cancel()
            raise
        return self._collect_hashes()

    def _scan(
        self,
        listing: list[os.DirEntry],
        directory: str,
        prefix: str,
        ancestors: frozenset,
        stack: list,
        layers: _Layers,
    ) -> None:
        """Every entry of one directory (listed through a file descriptor: its entries' `stat` is relative to it)."""
        names = [entry.name for entry in listing]
        if not IGNORE_FILES_SET.isdisjoint(names):
            layers = layers.below(self.root, directory, prefix)
        ruleset = layers.ruleset
        # The names a rule or the name check must look at, found at C speed: for the others (nearly always all of them)
        # the loop below does a single set lookup, or there is no loop at all.
        joined = "/" + "/".join(names) + "/"
        # No name holds a "/", which is not a bad character either: one search of the joined names clears them all.
        flagged = set(filter(_has_bad_name_char, names)) if _has_bad_name_char(joined) else set()
        flagged.update(ruleset.names_matching(names, prefix, joined))
        include = self.include
        near_limit = self.file_count + len(listing) >= MAX_FILES  # else no file of this listing reaches it
        hash_now = self.cache is None
        path_prefix = directory if directory.endswith("/") else directory + "/"
        quick = not (flagged or near_limit or hash_now or not prefix or include is not None)
        if (
            quick
            and len(prefix) + max(map(len, names), default=0) <= MAX_PATH_LENGTH
            and self._scan_unflagged(listing, directory, prefix, ancestors, stack, layers, path_prefix)
        ):
            return
        decide = ruleset.decide
        plain = []  # the regular files below the top level that are listed
        for entry in listing:
            name = entry.name
            rel = prefix + name
            try:
                plain_file = entry.is_file(follow_symlinks=False)  # from the directory entry's type: no syscall
            except OSError as error:
                raise _unreadable(rel, error) from None
            if not plain_file or not prefix:
                self._other(entry, directory, name, rel, prefix, ancestors, stack, layers)
                continue
            # A regular file below the top level: the common case.
            if name in flagged:
                if decide(rel, name, False):
                    continue
                _check_name(rel, name, top=False)
            elif len(rel) > MAX_PATH_LENGTH:
                _check_name(rel, name, top=False)
            if include is not None and not include.decide_with_ancestors(rel):
                continue
            if near_limit and self.file_count + len(plain) >= MAX_FILES:
                raise _too_many(f"more than {MAX_FILES} files under {self.root}")
            if hash_now:
                self._hash(rel, path_prefix + name, nofollow=True)
            else:
                plain.append(entry)
        if plain:
            self._plain_files(plain, prefix, path_prefix)

    def _scan_unflagged(
        self,
        listing: list[os.DirEntry],
        directory: str,
        prefix: str,
        ancestors: frozenset,
        stack: list,
        layers: _Layers,
        path_prefix: str,
    ) -> bool:
        """`_scan` of a directory below the top level where no name needs a rule or a check (the common case of a
        warm run): only which entries are regular files, at C speed. False when an entry cannot say: `_scan` then
        goes entry by entry and names it."""
        try:
            plain = [entry for entry in listing if entry.is_file(follow_symlinks=False)]
        except OSError:
            return False
        if len(plain) < len(listing):
            for entry in listing:
                if not entry.is_file(follow_symlinks=False):
                    rel = prefix + entry.name
                    self._other(entry, directory, entry.name, rel, prefix, ancestors, stack, layers)
        if plain:
            self._plain_files(plain, prefix, path_prefix)
        return True

    def _plain_files(self, plain: list[os.DirEntry], prefix: str, path_prefix: str) -> None:
        """The listed regular files of one directory, against its cache record: all known at once when its stats
        are exactly the record's, else one by one. This is the whole cost of a warm run: one lstat per file."""
        try:
            stats = [entry.stat(follow_symlinks=False) for entry in plain]  # fstatat(fd, name): no path resolved
        except OSError:
            stats = []
            for entry in plain:  # which one
                try:
                    stats.append(entry.stat(follow_symlinks=False))
                except OSError as error:
                    raise _unreadable(prefix + entry.name, error) from None
        # The record's text (`_record_line`), written out here: this runs once per file.
        lines = "".join(
            [
                f"{entry.name}\\u0000{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_mode}\\n"
                for entry, st in zip(plain, stats, strict=True)
            ]
        )
        if '"' in lines:  # a name with a quote, which the record holds escaped
            lines = "".join([_record_line(entry.name, _stat_key(st)) for entry, st in zip(plain, stats, strict=True)])
        record = self.cache.directories.get(prefix)
        if (
            record is not None
            and record[0] == lines
            and max([st.st_mtime_ns for st in stats]) <= self.cache.trusted_before
            and _usable_hashes(record[1], len(plain))
        ):
            self.unchanged.append((prefix, record))
            self.unchanged_files += len(plain)
            self.unchanged_size += sum([st.st_size for st in stats])
            self.from_cache += len(plain)
            return
        order = self.order.setdefault(prefix, [])
        for entry, st in zip(plain, stats, strict=True):
            name = entry.name
            order.append(name)
            self._lookup(prefix, name, st, path_prefix + name, nofollow=True, mode=_MODES[st.st_mode & 0o100])

    def _lookup(self, prefix: str, name: str, st: os.stat_result, path: str, *, nofollow: bool, mode: str) -> None:
        """List a file from the cache when its stat is unchanged and not racy, else queue it for hashing."""
        known = self._known.get(prefix)
        if known is None:
            known = self._known[prefix] = self.cache.known(prefix) if self.cache is not None else {}
        key = _stat_key(st)
        entry = known.get(name)
        if entry is None or entry[0] != key or st.st_mtime_ns > self.cache.trusted_before:
            self._hash(prefix + name, path, nofollow=nofollow)
            return
        self.rows.append((prefix + name, st.st_size, mode, entry[1]))
        self.remembered.setdefault(prefix, {})[name] = entry
        self.from_cache += 1

    def _other(
        self,
        entry: os.DirEntry,
        directory: str,
        name: str,
        rel: str,
        prefix: str,
        ancestors: frozenset,
        stack: list,
        layers: _Layers,
    ) -> None:
        """Directories, symlinks, special files, and anything at the top level."""
        if not prefix and name == STATE_DIR:
            return  # rhone's own state (the cache lives there): never part of an artifact
        try:
            is_link = entry.is_symlink()
            try:
                is_dir = entry.is_dir()  # follows symlinks: a symlinked directory is a directory for the rules
            except OSError:
                if not is_link:
                    raise
                is_dir = False  # a looping symlink: _resolve_link says so, unless the rules ignore it
        except OSError as error:
            raise _unreadable(rel, error) from None
        if layers.ruleset.decide(rel, name, is_dir):
            return
        _check_name(rel, name, top=not prefix)
        real = os.path.join(directory, name)
        try:
            if is_link:
                real = self._resolve_link(real, rel)
                st = os.stat(real)
            else:
                st = entry.stat(follow_symlinks=False)
        except OSError as error:
            raise _unreadable(rel, error) from None
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                raise _unsafe(rel, "symlink cycle: it leads back to a directory that contains it")
            stack.append((real, rel + "/", ancestors | {key}, layers))
            return
        if not stat.S_ISREG(st.st_mode):
            raise _unsafe(rel, f"not a regular file ({_kind(st.st_mode)})")
        if self.include is not None and not self.include.decide_with_ancestors(rel):
            return
        if self.file_count >= MAX_FILES:
            raise _too_many(f"more than {MAX_FILES} files under {self.root}")
        if self.cache is None:
            self._hash(rel, real, nofollow=not is_link)
            return
        self.order.setdefault(prefix, []).append(name)
        self._lookup(prefix, name, st, real, nofollow=not is_link, mode=mode_of(st.st_mode))

    def _resolve_link(self, path: str, rel: str) -> str:
        """The real path the symlink at `path` leads to, when it is safe to follow."""
        try:
            real = os.path.realpath(path, strict=True)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise _unsafe(rel, "symlink loop") from None
            if isinstance(error, FileNotFoundError):
                raise _unsafe(rel, f"broken symlink (to {_display(os.readlink(path))})") from None
            raise
        if not _within(real, self.root):
            raise _unsafe(rel, f"symlink points outside the root (to {_display(real)})")
        if _within(real, self.state_dir):
            raise _unsafe(rel, f"symlink points into {STATE_DIR}/, rhone's own state")
        return real

    def _hash(self, rel: str, path: str, *, nofollow: bool) -> None:
        """Queue `path` for hashing (on worker threads once there are enough files to keep them busy)."""
        if self.watch and rel in self.watch:
            self.hashed_watched.append(rel)
        if self.hasher is None:
            from rhone_cli.artifacts._hashing import ParallelHasher, worker_count

            self.hasher = ParallelHasher(worker_count(), self.to_hash)
        self.hasher.add(rel, path, nofollow)

    def _collect_hashes(self) -> int:
        """Wait for the queued files' hashes and list them; the first failure in walk order is raised."""
        if self.hasher is None:
            return 0
        from rhone_cli.artifacts._hashing import CHUNK_SIZE

        outcomes = self.hasher.finish(bytearray(CHUNK_SIZE))
        for (rel, _path, _nofollow), outcome in zip(self.to_hash, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise _hashing_failed(rel, outcome) from None
            digest, size, opened = outcome
            self.rows.append((rel, size, _MODES[opened.st_mode & 0o100], digest))
            if self.cache is not None and size == opened.st_size:  # else it changed while being read: not remembered
                head, _, name = rel.rpartition("/")
                self.remembered.setdefault(head + "/" if head else "", {})[name] = (_stat_key(opened), digest)
        self.to_hash = []
        return len(outcomes)

    def new_records(self) -> dict[str, list[str]]:
        """The next cache's records: the matching ones as they were, the others made from the files remembered, in
        the order their directories list them (so that an unchanged directory matches as a whole next time)."""
        records = dict(self.unchanged)
        for prefix, names in self.order.items():
            remembered = self.remembered.get(prefix, {})
            entries = [(name, remembered[name]) for name in names if name in remembered]
            if entries:
                lines = "".join([_record_line(name, key) for name, (key, _sha) in entries])
                records[prefix] = [lines, "".join([sha for _name, (_key, sha) in entries])]
        return records

    def remembered_count(self) -> int:
        return self.unchanged_files + sum(len(entries) for entries in self.remembered.values())

    def all_rows(self) -> list[tuple[str, int, str, str]]:
        rows = self.rows
        for prefix, record in self.unchanged:
            rows.extend(_record_rows(prefix, record))
        self.unchanged = []
        rows.sort(key=_path_of_row)
        return rows


def _path_of_row(row: tuple[str, int, str, str]) -> str:
    return row[0]


def _open_directory(directory: str, prefix: str) -> tuple[int | None, list[os.DirEntry]]:
    """A file descriptor of `directory` (a real path: never through a symlink) and its entries, whose `stat` is then
    relative to it; where scandir takes no descriptor (Windows), None and the entries of the path."""
    where = prefix.rstrip("/") or "."
    fd = None
    try:
        if _SCANDIR_FD:
            fd = os.open(directory, _O_DIRECTORY)
        with os.scandir(directory if fd is None else fd) as entries:
            return fd, list(entries)
    except OSError as error:
        if fd is not None:
            os.close(fd)
        if error.errno == errno.ELOOP:
            raise _unsafe(where, "changed into a symlink while the manifest was being built") from None
        raise _unreadable(where, error) from None


IGNORE_FILES = (GIT_IGNORE_FILE, IGNORE_FILE)
IGNORE_FILES_SET = frozenset(IGNORE_FILES)


def _read_ignore_file(root: str, directory: str, prefix: str, name: str) -> list[Rule]:
    """The rules of the ignore file `name` in `directory` (real path; root-relative `prefix`), [] when it has none."""
    rel = prefix + name
    path = os.path.join(directory, name)
    try:
        real = os.path.realpath(path, strict=True)
    except FileNotFoundError:
        return []
    except OSError as error:
        raise _unsafe(rel, f"cannot be read ({error.strerror or error})") from None
    if not _within(real, root):
        raise _unsafe(rel, "symlink points outside the root")
    if not os.path.isfile(real):
        return []
    try:
        with open(real, "rb") as f:
            data = f.read()
        # What decode("utf-8-sig") does, without loading that codec on a warm run's path: one leading BOM is dropped.
        text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError:
        raise _usage_error(f"{path} is not valid UTF-8", "invalid_ignore_file") from None
    except OSError as error:
        raise _unreadable(rel, error) from None
    try:
        return parse_rules(text.splitlines(), source=rel, base=prefix)
    except ValueError as error:
        raise _usage_error(str(error), "invalid_ignore_file") from None


class _Layers:
    """The ignore rules in effect in one directory, in the order they apply (the last matching rule decides): the
    built-in defaults, the .gitignore files from the root down, the .rhoneignore files from the root down, and
    build.exclude."""

    def __init__(
        self, defaults: tuple[Rule, ...], git: tuple[Rule, ...], rhone: tuple[Rule, ...], exclude: tuple[Rule, ...]
    ) -> None:
        self.defaults, self.git, self.rhone, self.exclude = defaults, git, rhone, exclude
        self._ruleset: RuleSet | None = None

    @property
    def ruleset(self) -> RuleSet:
        if self._ruleset is None:
            self._ruleset = RuleSet([*self.defaults, *self.git, *self.rhone, *self.exclude])
        return self._ruleset

    def below(self, root: str, directory: str, prefix: str) -> _Layers:
        """The rules for `directory`'s entries: these plus its own ignore files'."""
        git = _read_ignore_file(root, directory, prefix, GIT_IGNORE_FILE)
        rhone = _read_ignore_file(root, directory, prefix, IGNORE_FILE)
        if not git and not rhone:
            return self
        return _Layers(self.defaults, self.git + tuple(git), self.rhone + tuple(rhone), self.exclude)


def _base_layers(exclude: Sequence[str]) -> _Layers:
    try:
        return _Layers(
            tuple(parse_rules(DEFAULT_IGNORES, source="<defaults>")),
            (),
            (),
            tuple(parse_rules(exclude, source="build.exclude")),
        )
    except ValueError as error:
        raise _usage_error(str(error), "invalid_ignore_file") from None


def _include_rules(include: Sequence[str]) -> RuleSet | None:
    try:
        return None if _is_match_everything(include) else RuleSet(parse_rules(include, source="build.include"))
    except ValueError as error:
        raise _usage_error(str(error), "invalid_ignore_file") from None


def _real_root(root: str | os.PathLike[str]) -> str:
    try:
        real_root = os.path.realpath(os.fspath(root), strict=True)
    except OSError as error:
        raise _usage_error(f"{root}: {error.strerror or error}", "not_a_directory") from None
    if not os.path.isdir(real_root):
        raise _usage_error(f"{root}: not a directory", "not_a_directory")
    return real_root


def explain(
    root: str | os.PathLike[str], path: str, *, include: Sequence[str] = ("**",), exclude: Sequence[str] = ()
) -> dict[str, Any]:
    """Why `path` (relative to `root`) is in the manifest or out of it: the deciding rule and where it is written.
    Answers for paths that do not exist too (as they would be decided)."""
    real_root = _real_root(root)
    rel = "/".join(part for part in path.replace(os.sep, "/").split("/") if part not in ("", "."))
    if not rel or ".." in rel.split("/"):
        raise _usage_error(f"{path!r}: name a path inside {real_root}", "invalid_path")
    segments = rel.split("/")
    layers, directory = _base_layers(exclude), real_root
    for depth, name in enumerate(segments):
        prefix = "/".join(segments[:depth]) + ("/" if depth else "")
        layers = layers.below(real_root, directory, prefix)
        here = prefix + name
        if depth == 0 and name == STATE_DIR:
            return _verdict(rel, False, f"{STATE_DIR}/ is rhone's own state, never part of an artifact", None)
        is_dir = depth < len(segments) - 1 or os.path.isdir(os.path.join(directory, name))
        rule = layers.ruleset.deciding_rule(here, name, is_dir)
        if rule is not None and not rule.negate:
            what = f"its directory {here}/" if depth < len(segments) - 1 else here
            return _verdict(rel, False, f"{what} is ignored by {_where(rule)}", rule)
        directory = os.path.join(directory, name)
    include_rules = _include_rules(include)
    if include_rules is not None and not include_rules.decide_with_ancestors(rel):
        return _verdict(rel, False, f"no build.include pattern matches it ({', '.join(include)})", None)
    exists = os.path.lexists(os.path.join(real_root, *segments))
    # A rule that matched the path itself (and did not exclude it) re-included it.
    reason = f"re-included by {_where(rule)}" if rule is not None else "no ignore rule matches it"
    if not exists:
        reason += " (it does not exist: this is how it would be decided)"
    return _verdict(rel, True, reason, rule)


def _where(rule: Rule) -> str:
    return f"{rule.text!r} ({rule.source})"


def _verdict(path: str, included: bool, reason: str, rule: Rule | None) -> dict[str, Any]:
    return {
        "path": path,
        "included": included,
        "reason": reason,
        "rule": {"pattern": rule.text, "source": rule.source, "negated": rule.negate} if rule else None,
    }


def build_manifest(
    root: str | os.PathLike[str],
    *,
    include: Sequence[str] = ("**",),
    exclude: Sequence[str] = (),
    use_cache: bool = True,
    watch: frozenset[str] = frozenset(),
) -> Manifest:
    """The manifest of the directory `root` (see the module docstring for what is listed and what is refused).

    `include`/`exclude` are rhone.toml's `build.include`/`build.exclude` (gitignore-style globs relative to the root).
    Of the root-relative paths in `watch`, those this run hashed (rather than took from the stat cache) are the
    manifest's `hashed_watched`: a caller leaving a file out afterwards keeps `hashed_count` true.
    Raises `RhoneError` (`unsafe_path`, `unreadable_path`, `too_many_files`, `invalid_ignore_file`).
    """
    real_root = _real_root(root)
    layers, include_rules = _base_layers(exclude), _include_rules(include)
    state_dir = os.path.join(real_root, STATE_DIR) if use_cache else None
    cache = _load_cache(os.path.join(state_dir, CACHE_FILE)) if state_dir is not None else None
    walk = _Walk(real_root, layers, include_rules, cache, watch)
    hashed = walk.run()
    count, size = walk.file_count, walk.unchanged_size + sum([row[1] for row in walk.rows])
    if cache is not None and not hashed and cache.digest and walk.from_cache == cache.file_count == count:
        # Every file came from a distinct cache entry and every entry was used, so the document is exactly the one the
        # cache's digest was computed from (path, sha256, and the size and mode bits of the matching stat): skip
        # re-encoding, and the cache stays as it is.
        return Manifest(
            real_root, rows=walk.all_rows, digest=cache.digest, file_count=count, total_size=size, state_dir=state_dir
        )
    records = walk.new_records() if cache is not None else None
    result = Manifest(
        real_root,
        rows=walk.all_rows(),
        hashed_count=hashed,
        state_dir=state_dir,
        hashed_watched=frozenset(walk.hashed_watched),
    )
    if records is not None:
        # The digest is stored only when the records describe the whole manifest (a file that changed while being
        # read is listed but not remembered).
        complete = walk.remembered_count() == count
        result.cache_warning = _write_cache(real_root, records, result.digest if complete else None)
    return result


# -- checking a received manifest -----------------------------------------------------------------------------------
def validate_manifest_document(doc: Any) -> None:
    """Check a manifest document received from elsewhere; raise ValueError naming the first problem found."""
    if not isinstance(doc, dict):
        raise ValueError("manifest must be a JSON object")
    if set(doc) != {"version", "files"}:
        raise ValueError(f"manifest must have exactly the keys 'version' and 'files' (got {sorted(doc)})")
    version = doc["version"]
    if type(version) is not int or version != MANIFEST_VERSION:
        raise ValueError(f"unsupported manifest version {version!r} (expected {MANIFEST_VERSION})")
    files = doc["files"]
    if not isinstance(files, list):
        raise ValueError("'files' must be a list")
    if len(files) > MAX_FILES:
        raise ValueError(f"too many files: {len(files)} (at most {MAX_FILES})")
    previous: str | None = None
    paths: set[str] = set()
    for index, entry in enumerate(files):
        where = f"files[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object")
        if set(entry) != {"path", "size", "mode", "sha256"}:
            raise ValueError(f"{where} must have exactly the keys path, size, mode, sha256 (got {sorted(entry)})")
        path = entry["path"]
        _check_path(path, where)
        where = f"{where} ({path!r})"
        if path in paths:
            raise ValueError(f"{where}: duplicate path")
        if previous is not None and path < previous:
            raise ValueError(f"{where}: files are not sorted by path (it comes after {previous!r})")
        paths.add(path)
        previous = path
        size = entry["size"]
        if type(size) is not int or size < 0 or size > 2**63 - 1:
            raise ValueError(f"{where}: size must be a non-negative integer (got {size!r})")
        if entry["mode"] not in ("644", "755"):
            raise ValueError(f'{where}: mode must be "644" or "755" (got {entry["mode"]!r})')
        digest = entry["sha256"]
        if not _is_hex_digest(digest):
            raise ValueError(f"{where}: sha256 must be 64 lowercase hex digits (got {digest!r})")
    for path in paths:  # a path cannot be both a file and a directory of another file
        segments = path.split("/")
        for k in range(1, len(segments)):
            parent = "/".join(segments[:k])
            if parent in paths:
                raise ValueError(f"{parent!r} is listed as a file but {path!r} is inside it")


def _check_path(path: Any, where: str) -> None:
    if not isinstance(path, str) or not path:
        raise ValueError(f"{where}: path must be a non-empty string")
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(f"{where}: path is longer than {MAX_PATH_LENGTH} characters")
    if path.startswith("/") or _looks_like_drive(path):
        raise ValueError(f"{where}: path {path!r} must be relative, not absolute")
    if "\\" in path:
        raise ValueError(f"{where}: path {path!r} must use '/' separators and contain no backslash")
    if _has_bad_name_char(path):
        raise ValueError(f"{where}: path {path!r} contains a control character or is not valid UTF-8")
    for segment in path.split("/"):
        if segment == "":
            raise ValueError(f"{where}: path {path!r} has an empty segment")
        if segment in (".", ".."):
            raise ValueError(f"{where}: path {path!r} is not normalized (contains {segment!r})")
