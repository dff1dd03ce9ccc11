"""Console-script entry point, kept tiny: `rhone --version` answers without building the command tree."""

from __future__ import annotations

import sys


def run() -> None:
    argv = sys.argv[1:]
    if argv == ["--version"]:
        from rhone_cli import __version__

        sys.stdout.write(f"rhone {__version__}\n")
        raise SystemExit(0)
    from rhone_cli.main import main

    raise SystemExit(main(argv))
