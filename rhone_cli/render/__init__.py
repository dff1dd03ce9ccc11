"""Human renderings of command results, shared by the commands that show the same things (like gh's `shared`).

A renderer takes a result document and returns `human(out)`, which writes it through `Output` (tables, fields,
lines); `out.result(doc, human)` calls it only without `--json`. Renderers read documents and write through `Output`:
they call no API and import no command or service. One module per noun; the generic pieces are here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rhone_cli.output import Output

Human = Callable[[Output], None]


def table(columns: list[str], keys: list[str], rows: list[dict[str, Any]], empty: str) -> Human:
    def human(out: Output) -> None:
        out.table(columns, [[cell(row.get(k)) for k in keys] for row in rows], empty=empty)

    return human


def cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)


def fields(doc: dict[str, Any], order: list[str]) -> Human:
    def human(out: Output) -> None:
        out.fields(doc, order=[k for k in order if k in doc])

    return human


def created_or_operation(doc: dict[str, Any], what: str) -> Human:
    """Human rendering of a create command: the new resource, or the operation with --no-wait."""

    def human(out: Output) -> None:
        if str(doc.get("id", "")).startswith("op_"):
            out.line(f"{doc['id']}  {doc['kind']}  {doc['state']}")
        else:
            out.line(f"created {what} {doc['name']} ({doc['id']})")

    return human
