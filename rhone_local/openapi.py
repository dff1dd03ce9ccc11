"""Generate `schemas/openapi.json` from the API: `python -m rhone_local.openapi [--check]`."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "schemas" / "openapi.json"


def document() -> str:
    from rhone_local.server import standalone_api
    from rhone_local.store import Store

    with tempfile.TemporaryDirectory() as directory:
        store = Store(Path(directory) / "openapi.db")
        try:
            spec = standalone_api(store).openapi()
        finally:
            store.close()
    return json.dumps(spec, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = document()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print("schemas/openapi.json is out of date; run `python -m rhone_local.openapi`", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
