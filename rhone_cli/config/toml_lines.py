"""Find the line on which a TOML key path is written.

`tomllib` returns plain dicts without positions, but a good error names the line. This scanner reads the TOML text
once and records, for every table header, key and top-level array element, the line where it starts, keyed by the
same path pydantic reports (`("build", "include", 1)`). It understands enough TOML to skip over strings, multi-line
strings, inline tables and multi-line arrays; it never decides validity (tomllib does that first).
"""

from __future__ import annotations

Path = tuple[str | int, ...]


def _split_key(text: str) -> list[str]:
    """Split a (possibly dotted, possibly quoted) TOML key into its parts."""
    parts: list[str] = []
    current = ""
    quote: str | None = None
    for char in text:
        if quote:
            if char == quote:
                quote = None
            else:
                current += char
        elif char in "\"'":
            quote = char
        elif char == ".":
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return [p for p in parts if p != ""]


def _find_unquoted(text: str, target: str) -> int:
    quote: str | None = None
    for index, char in enumerate(text):
        if quote:
            if char == "\\" and quote == '"':
                continue
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == target:
            return index
    return -1


class _ValueScanner:
    """Walks a value that may span lines, recording where each top-level array element starts."""

    def __init__(self, path: Path, lines: dict[Path, int]) -> None:
        self.path = path
        self.lines = lines
        self.depth = 0
        self.array_at_top = False
        self.element = -1
        self.expect_element = False
        self.string: str | None = None  # the closing delimiter of the string we are inside
        self.done = False

    def feed(self, text: str, lineno: int) -> None:
        i = 0
        while i < len(text):
            if self.string is not None:
                if self.string in ('"', '"""') and text[i] == "\\":
                    i += 2
                    continue
                if text.startswith(self.string, i):
                    i += len(self.string)
                    self.string = None
                    if self.depth == 0:
                        self.done = True
                    continue
                i += 1
                continue
            char = text[i]
            if char == "#":
                break
            if char.isspace():
                i += 1
                continue
            if self.expect_element and char not in ",]":
                self.element += 1
                self.lines.setdefault((*self.path, self.element), lineno)
                self.expect_element = False
            if text.startswith('"""', i) or text.startswith("'''", i):
                self.string = text[i : i + 3]
                i += 3
                continue
            if char in "\"'":
                self.string = char
                i += 1
                continue
            if char in "[{":
                if self.depth == 0 and char == "[":
                    self.array_at_top = True
                    self.expect_element = True
                self.depth += 1
            elif char in "]}":
                self.depth -= 1
                if self.depth == 0:
                    self.done = True
            elif char == "," and self.depth == 1 and self.array_at_top:
                self.expect_element = True
            elif self.depth == 0:
                # A bare scalar (number, bool, date) ends with the line.
                self.done = True
            i += 1
        if self.depth == 0 and self.string is None:
            self.done = True


def key_lines(source: str) -> dict[Path, int]:
    """Map every key path in `source` to the 1-based line where it is written."""
    lines: dict[Path, int] = {}
    table: Path = ()
    array_counts: dict[Path, int] = {}
    pending: _ValueScanner | None = None
    # Split on "\n" only: TOML lines end with LF or CRLF, while str.splitlines() also breaks at U+2028, U+0085
    # and friends, which TOML allows inside strings and comments (every later line would be off by one).
    for lineno, raw in enumerate(source.split("\n"), start=1):
        if pending is not None:
            pending.feed(raw, lineno)
            if pending.done:
                pending = None
            continue
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("[["):
            end = text.find("]]")
            name = tuple(_split_key(text[2:end]))
            index = array_counts.get(name, 0)
            array_counts[name] = index + 1
            table = (*name, index)
            lines.setdefault(name, lineno)
            lines.setdefault(table, lineno)
            continue
        if text.startswith("["):
            end = _find_unquoted(text, "]")
            table = tuple(_split_key(text[1:end]))
            for cut in range(1, len(table) + 1):
                lines.setdefault(table[:cut], lineno)
            continue
        equals = _find_unquoted(text, "=")
        if equals < 0:
            continue
        key_path = table + tuple(_split_key(text[:equals]))
        for cut in range(len(table) + 1, len(key_path) + 1):
            lines.setdefault(key_path[:cut], lineno)
        scanner = _ValueScanner(key_path, lines)
        scanner.feed(text[equals + 1 :], lineno)
        if not scanner.done:
            pending = scanner
    return lines


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of `path`, or of its nearest written ancestor (a missing key is reported at its table)."""
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None
