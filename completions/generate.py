"""Write the shell completion scripts in this directory: exactly what `rhone completion SHELL` prints.

python completions/generate.py           # (re)write rhone.bash, rhone.zsh, rhone.fish
python completions/generate.py --check   # exit 1, naming the stale files, if any differs from the generator
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHELLS = ("bash", "zsh", "fish")


def expected() -> dict[Path, str]:
    sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing
    from rhone_cli.commands.completion import script

    return {HERE / f"rhone.{shell}": script(shell) for shell in SHELLS}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    unknown = [a for a in argv if a != "--check"]
    if unknown:
        print(f"usage: {Path(__file__).name} [--check]", file=sys.stderr)
        return 2
    stale = []
    for path, text in expected().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not check:
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"wrote {path.relative_to(HERE.parent)}")
    if check and stale:
        names = ", ".join(str(p.relative_to(HERE.parent)) for p in stale)
        print(f"stale: {names} (regenerate with `python completions/generate.py`)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
