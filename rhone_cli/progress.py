"""Progress while an operation runs and while blobs upload, on stderr.

- On an interactive terminal (`--progress auto`, stderr a TTY, TERM not dumb, not `--quiet`): a live display drawn
  with rich — each stage the operation went through with its duration, the current one with a spinner and its
  elapsed time, and a byte counter while uploading — which stays on screen, finished, above the result.
- Otherwise (`--progress plain`, or auto without a terminal): one plain line per stage.
- `--progress jsonl` and `none` draw nothing here (the JSON events are `Output.progress_event`'s).

Stages come from the operation's recorded history (`stages`), not from the states this client happened to see: a
long poll can return several stages at once (`cloning` and `building` both passed while the client waited), and
each is shown. rich is imported only when a live display is drawn.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rhone_cli.outcomes import RUNNING, outcome
from rhone_cli.output import sanitize_terminal

if TYPE_CHECKING:
    from rhone_cli.output import Output


class OperationProgress:
    """Plain lines: one per stage the operation recorded, after those already shown."""

    def __init__(self, out: Output, op: dict[str, Any]) -> None:
        self.out = out
        self.shown = len(op.get("stages") or [])  # the announcement covered them

    def update(self, op: dict[str, Any]) -> None:
        for stage in _stages(op)[self.shown :]:
            self.out.info(f"  {stage['state']}")
        self.shown = max(self.shown, len(_stages(op)))

    def close(self) -> None:
        pass


class SilentProgress(OperationProgress):
    def update(self, op: dict[str, Any]) -> None:
        pass


class LiveOperationProgress(OperationProgress):
    """The live display: finished stages with their durations, the current one with a spinner and its elapsed time."""

    def __init__(self, out: Output, op: dict[str, Any]) -> None:
        super().__init__(out, op)
        from rich.live import Live
        from rich.spinner import Spinner

        self.op = op
        self.spinner = Spinner("dots")  # one spinner for the whole wait, so it turns
        self.since = time.monotonic()  # when this client first saw the current stage
        self.live = Live(self, console=out._console(stderr=True), refresh_per_second=8, transient=False)
        self.live.start()

    def update(self, op: dict[str, Any]) -> None:
        if op["state"] != self.op["state"]:
            self.since = time.monotonic()
        self.op = op
        self.live.refresh()

    def close(self) -> None:
        self.live.stop()

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        stages = _stages(self.op)
        lines: list[Any] = []
        for stage, following in zip(stages, [*stages[1:], None], strict=True):
            if following is None and outcome(self.op) == RUNNING:
                break  # the current stage: the spinner below
            seconds = _seconds_between(stage, following)
            mark = "✗" if stage.get("error") else "✓"  # a failed or blocked stage records why
            timing = "" if seconds is None else f"  {seconds:.1f}s"
            lines.append(Text(f"  {mark} {_clean(stage['state'])}{timing}"))
        if outcome(self.op) == RUNNING:
            elapsed = time.monotonic() - self.since
            label = f"{_clean(self.op['kind'])} {_clean(self.op['id'])}: {_clean(self.op['state'])}  {elapsed:.1f}s"
            self.spinner.update(text=label)
            lines.append(self.spinner)
        return Group(*lines)


def _stages(op: dict[str, Any]) -> list[dict[str, Any]]:
    return op.get("stages") or [{"state": op["state"], "entered_at": op.get("updated_at")}]


def _seconds_between(stage: dict[str, Any], following: dict[str, Any] | None) -> float | None:
    from datetime import datetime

    if following is None:
        return None
    try:
        start = datetime.fromisoformat(str(stage["entered_at"]))
        end = datetime.fromisoformat(str(following["entered_at"]))
    except (KeyError, TypeError, ValueError):
        return None
    return max(0.0, (end - start).total_seconds())


def _clean(text: Any) -> str:
    return sanitize_terminal(str(text))


def live(out: Output) -> bool:
    """Whether animated progress may be drawn: a person watching a terminal who asked for nothing else."""
    env = out.env
    return (
        env.options.progress == "auto"
        and not env.options.quiet
        and env.stderr_isatty
        and env.environ.get("TERM") != "dumb"
    )


def for_operation(out: Output, op: dict[str, Any]) -> OperationProgress:
    mode = out.env.options.progress
    if mode in ("jsonl", "none") or out.env.options.quiet:
        return SilentProgress(out, op)
    if live(out):
        return LiveOperationProgress(out, op)
    return OperationProgress(out, op)


@contextmanager
def transfer(out: Output, total: int, description: str) -> Iterator[Any]:
    """Yields `advance(n)` to call as bytes go out; on a terminal a live byte counter shows them."""
    if not live(out) or total <= 0:
        yield lambda n: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn(description), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=out._console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
