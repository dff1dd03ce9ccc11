"""Console-script entry point, kept tiny: `rhone --version` answers without building the command tree."""

from __future__ import annotations

import sys


def run() -> None:
    argv = sys.argv[1:]
    if argv == ["--version"]:
        from rhone_cli import __version__

        sys.stdout.write(f"rhone {__version__}\n")
        raise SystemExit(0)
    if "manifest" in argv:  # `rhone artifact manifest` answers without the command tree when it can
        from rhone_cli.artifacts._manifest_command import run as run_manifest

        status = run_manifest(argv)
        if status is not None:
            raise SystemExit(status)
    if "validate" in argv:  # so does `rhone config validate` of a valid file
        from rhone_cli.config._validate_command import run as run_validate

        status = run_validate(argv)
        if status is not None:
            raise SystemExit(status)
    from rhone_cli.main import main

    raise SystemExit(main(argv))
