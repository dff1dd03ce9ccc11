"""All output goes through here: results, tables, progress, warnings, errors and exit codes.

The contract (PRODUCT.md §4):
- with `--json`, stdout carries exactly one JSON document and nothing else, ever — a result or an error document;
- human results go to stdout; progress, warnings and hints go to stderr;
- animated progress only when stderr is an interactive terminal, one plain line per change otherwise, or one JSON
  object per line with `--progress jsonl`;
- known secrets are masked in every line written.

rich is imported only when a human-readable table or styled line is actually rendered.
"""

from __future__ import annotations

import time

# `typing` is for the type checker only: this module is on the start-up path of the commands answered without the
# command tree, where importing it costs ~2 ms (rhone_cli/plain_invocation.py). So do `json`, `re` (with `enum`) and
# `rhone_cli.errors` (an IntEnum), several times the CPU time of a warm `artifact manifest`'s walk: they are imported
# by the functions that need them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

    from rich.console import Console

    from rhone_cli.environment import Environment
    from rhone_cli.errors import RhoneError

MASK = "********"

# What a terminal would obey rather than show. Build and app output (logs, log tails, health messages) is untrusted:
# a build could clear the screen, retitle the window, move the cursor over rhone's own lines, or set the clipboard
# (OSC 52). Escape sequences are removed; other control characters are shown in caret notation (^G).
_ESCAPES = (
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colors, cursor movement, erase
    r"|\x1b[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC (titles, OSC 52 clipboard), DCS, SOS, PM, APC
    r"|\x1b[ -/]*[0-~]?"  # other escapes (ESC c resets the terminal), and a lone ESC
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
    r"|[\x90\x98\x9d\x9e\x9f][^\x07\x9c]*[\x07\x9c]?"  # 8-bit OSC, DCS, SOS, PM, APC
)
_CONTROLS = r"[\x00-\x08\x0b-\x1f\x7f-\x9f]"
_compiled: list[re.Pattern[str]] = []  # [escapes, controls], compiled when first needed


def sanitize_terminal(text: str) -> str:
    """`text` with terminal control sequences removed and other control characters made visible; tabs and line
    ends stay (a carriage return becomes a line end, so it cannot overwrite a line)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.replace("\n", "").replace("\t", "").isprintable():
        return text  # every escape sequence starts with, and every control character is, an unprintable character
    if not _compiled:
        import re

        _compiled.extend([re.compile(_ESCAPES), re.compile(_CONTROLS)])
    escapes, controls = _compiled
    return controls.sub(_visible, escapes.sub("", text))


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return f"^{chr(code + 64)}"
    return "^?" if code == 0x7F else f"\\x{code:02x}"


class Output:
    def __init__(self, env: Environment) -> None:
        self.env = env
        self._stdout_console: Console | None = None
        self.document_written = False

    # -- secrets -----------------------------------------------------------------------------------------------
    def mask(self, text: str) -> str:
        for secret in sorted(self.env.secrets, key=len, reverse=True):
            if secret and len(secret) >= 4:
                text = text.replace(secret, MASK)
        return text

    def _write(self, stream: Any, text: str, *, sanitize: bool = True) -> None:
        """Every byte rhone writes goes through here: secrets masked, terminal control sequences made harmless
        (`sanitize=False` only for text that can hold none)."""
        text = self.mask(text)
        stream.write(sanitize_terminal(text) if sanitize else text)
        stream.flush()

    # -- consoles (lazy: rich costs start-up time) ---------------------------------------------------------------
    def _console(self, *, stderr: bool) -> Console:
        from rich.console import Console

        stream = self.env.stderr if stderr else self.env.stdout
        return Console(
            file=stream,
            no_color=not self.env.color,
            color_system="auto" if self.env.color else None,
            highlight=False,
            soft_wrap=True,
            emoji=False,
        )

    @property
    def console(self) -> Console:
        if self._stdout_console is None:
            self._stdout_console = self._console(stderr=False)
        return self._stdout_console

    # -- results ------------------------------------------------------------------------------------------------
    def json_document(self, document: Any) -> None:
        """Write the one JSON document of this invocation to stdout (through the --jq program, when there is one)."""
        if self.document_written:
            raise RuntimeError("a JSON document was already written to stdout")
        self.document_written = True
        if self.env.options.jq is not None:
            self._write(self.env.stdout, "".join(line + "\n" for line in jq_lines(self.env.options.jq, document)))
            return
        # Indented for a person at a terminal, compact when piped (as gh does): the same document, and a 50,000-file
        # manifest is written 3× faster. json.dumps escapes everything outside printable ASCII, so the terminal filter
        # (slow on megabytes) would find nothing to remove.
        import json

        layout: dict[str, Any] = {"indent": 2} if self.env.stdout_isatty else {"separators": (",", ":")}
        text = json.dumps(document, sort_keys=False, default=str, **layout) + "\n"
        self._write(self.env.stdout, text, sanitize=False)

    @property
    def compact_json(self) -> bool:
        """Whether `json_document` writes compact JSON (stdout piped, no --jq): the one layout a command may encode
        its document itself for (`encoded_json_document`)."""
        return self.env.options.jq is None and not self.env.stdout_isatty

    def encoded_json_document(self, pieces: Sequence[bytes]) -> None:
        """Write the one JSON document of this invocation, already encoded, in `pieces`, exactly as `json_document`
        would write it when `compact_json` (ASCII, then a line end): megabytes go out in one write, not re-encoded."""
        if self.document_written:
            raise RuntimeError("a JSON document was already written to stdout")
        self.document_written = True
        stream = self.env.stdout
        buffer = getattr(stream, "buffer", None)
        if buffer is None or self.env.secrets:  # a text stream, or secrets to mask: the text path of every write
            self._write(stream, b"".join(pieces).decode("ascii"), sanitize=False)
            return
        stream.flush()  # what was written as text before goes first
        buffer.write(b"".join(pieces))
        buffer.flush()

    def result(self, document: Any, human: Callable[[Output], None] | None = None) -> None:
        """Emit a command's result: the document with `--json`, else the human rendering (default: key: value)."""
        if self.env.options.json:
            self.json_document(document)
        elif human is not None:
            human(self)
        elif isinstance(document, dict):
            self.fields(document)
        else:
            import json

            self.line(json.dumps(document, indent=2, default=str))

    def line(self, text: str = "") -> None:
        """One plain line of human output on stdout (never in `--json` mode)."""
        if not self.env.options.json:
            self._write(self.env.stdout, text + "\n")

    def raw(self, text: str) -> None:
        """Text as it comes (a followed log), masked and sanitized like everything else, even with --json."""
        self._write(self.env.stdout, text)

    def fields(self, mapping: dict[str, Any], *, order: Sequence[str] | None = None) -> None:
        keys = list(order) if order else list(mapping)
        width = max((len(k) for k in keys), default=0)
        for key in keys:
            value = mapping.get(key)
            if isinstance(value, (dict, list)):
                import json

                value = json.dumps(value, default=str)
            self.line(f"{key.replace('_', ' ') + ':':<{width + 2}}{'' if value is None else value}")

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "nothing to show") -> None:
        rows = [["" if cell is None else str(cell) for cell in row] for row in rows]
        if not rows:
            self.info(empty)
            return
        if not self.env.stdout_isatty:
            # Piped human output: stable, tab-free columns without box drawing, easy to cut/awk.
            widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
            self.line("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=False)).rstrip())
            for row in rows:
                self.line("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())
            return
        from rich.table import Table

        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in columns:
            table.add_column(column.upper())
        for row in rows:
            table.add_row(*(sanitize_terminal(self.mask(cell)) for cell in row))
        self.console.print(table)

    # -- diagnostics on stderr ---------------------------------------------------------------------------------------
    def info(self, message: str) -> None:
        """A hint or status line for people; silenced by --quiet."""
        if not self.env.options.quiet:
            self._write(self.env.stderr, message + "\n")

    def warn(self, message: str, *, once: str | None = None) -> None:
        """A warning on stderr. `once` names a warning that must appear at most once per process."""
        if once is not None:
            if once in self.env.warned:
                return
            self.env.warned.add(once)
        self._write(self.env.stderr, f"warning: {message}\n")

    def debug(self, message: str) -> None:
        """Request log and internals, only with --verbose."""
        if self.env.options.verbose:
            self._write(self.env.stderr, f"debug: {message}\n")

    def progress_event(self, event_type: str, **fields: Any) -> None:
        """A state change: one JSON line with `--progress jsonl`, else one plain line unless quiet or silenced."""
        mode = self.env.options.progress
        if mode == "none":
            return
        message = fields.pop("message", None)
        if mode == "jsonl":
            import json

            event = {"v": 1, "ts": round(time.time(), 3), "type": event_type, **fields}
            self._write(self.env.stderr, json.dumps(event, default=str, separators=(",", ":")) + "\n")
            return
        if message:
            self.info(str(message))

    # -- errors -------------------------------------------------------------------------------------------------
    def error(self, error: RhoneError) -> int:
        """Render an error the documented way and return the process exit code."""
        # With --jq, stdout carries only what the filter selects: a failure is reported on stderr, for people.
        if self.env.options.json and not self.env.options.filtered and not self.document_written:
            self.json_document(error.to_document())
        else:
            parts = [f"error: {error.message}"]
            if error.request_id:
                parts.append(f"  request id: {error.request_id}")
            if error.operation_id:
                parts.append(f"  operation: {error.operation_id}")
            for problem in (error.details or {}).get("problems", []):
                parts.append(f"  {_problem_line(problem)}")
            log_tail = ((error.details or {}).get("evidence") or {}).get("log_tail")
            if log_tail:
                parts.append("  log (last lines):")
                parts.extend(f"    {line}" for line in str(log_tail).splitlines()[-15:])
            if error.hint:
                parts.append(f"  hint: {error.hint}")
            self._write(self.env.stderr, "\n".join(parts) + "\n")
        return int(error.exit_code)


def compile_jq(expression: str) -> Any:
    """The --jq program, compiled before the command runs (a syntax error must not follow a deploy)."""
    import jq

    from rhone_cli.errors import ExitCode, RhoneError

    try:
        return jq.compile(expression)
    except ValueError as error:
        raise RhoneError(
            f"--jq {expression!r} is not a valid jq program: {_jq_message(error)}",
            code="invalid_jq",
            exit_code=ExitCode.USAGE,
            hint="see the jq manual; e.g. --jq '.[].id' or --jq '.items | length'",
        ) from None


def jq_lines(program: Any, document: Any) -> list[str]:
    """Like `jq -r`: each output on its own line, strings raw, everything else as indented JSON."""
    import json

    from rhone_cli.errors import ExitCode, RhoneError

    try:
        outputs = program.input_value(json.loads(json.dumps(document, default=str))).all()
    except ValueError as error:
        raise RhoneError(
            f"--jq {program.program_string!r} failed on the result: {_jq_message(error)}",
            code="jq_error",
            exit_code=ExitCode.USAGE,
            hint="the result's shape is the --json document of the command (see schemas/)",
        ) from None
    return [value if isinstance(value, str) else json.dumps(value, indent=2) for value in outputs]


def _jq_message(error: ValueError) -> str:
    return " ".join(str(error).split())


def _problem_line(problem: object) -> str:
    """rhone.toml problems carry a ready `text`; the API's validation problems carry `loc` and `message`."""
    if not isinstance(problem, dict):
        return str(problem)
    if problem.get("text"):
        return str(problem["text"])
    where = ".".join(str(part) for part in problem.get("loc") or [] if part != "body")
    return f"{where}: {problem.get('message', '')}" if where else str(problem.get("message", problem))


def human_size(n: int) -> str:
    """1536 -> '1.5 KiB' (bytes below 1 KiB stay exact)."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
