"""Operations, for people: the record and its stage history."""

from __future__ import annotations

from rhone_cli.output import Output
from rhone_cli.render import Human


def operation(doc: dict) -> Human:
    def human(out: Output) -> None:
        out.fields(doc, order=["id", "kind", "state", "version", "target_id", "created_at", "updated_at"])
        if doc.get("error"):
            out.line(f"error:      {doc['error'].get('code')}: {doc['error'].get('message')}")
        out.line("stages:")
        for stage in doc.get("stages", []):
            note = f"  error: {stage['error'].get('message')}" if stage.get("error") else ""
            out.line(f"  {stage['entered_at']}  {stage['state']}{note}")

    return human
