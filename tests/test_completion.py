"""Shell completion: the committed scripts, a real bash pressing TAB, the zsh and fish protocols, and the walker.

The scripts under `completions/` are what `rhone completion SHELL` prints; on every TAB they call back into the
`rhone` console script, which answers in `rhone_cli/completion.py` by walking the command tree.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from rhone_cli import command_tree
from rhone_cli.commands.completion import script
from rhone_cli.completion import candidates, split_words
from rhone_cli.main import app
from tests.conftest import REPO

COMPLETIONS = REPO / "completions"
SHELLS = ["bash", "zsh", "fish"]
TOP_LEVEL = [
    "workspace",
    "project",
    "app",
    "env",
    "deploy",
    "promote",
    "logs",
    "region",
    "rollback",
    "route",
    "op",
    "artifact",
    "local",
    "config",
    "login",
    "logout",
    "whoami",
    "init",
    "completion",
    "help",
    "api",
    "status",
    "auth",
]


# -- the committed scripts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shell", SHELLS)
def test_committed_script_matches_generator(shell):
    committed = COMPLETIONS / f"rhone.{shell}"
    assert committed.is_file(), f"{committed} is missing: run `python completions/generate.py`"
    assert committed.read_text(encoding="utf-8") == script(shell), (
        f"completions/rhone.{shell} differs from `rhone completion {shell}`: "
        "regenerate with `python completions/generate.py`"
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_command_prints_the_script(rhone_subprocess, shell):
    result = rhone_subprocess("completion", shell)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (COMPLETIONS / f"rhone.{shell}").read_text(encoding="utf-8")


def test_generator_check_passes_on_the_committed_scripts():
    import subprocess

    proc = subprocess.run(
        [sys.executable, str(COMPLETIONS / "generate.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


# -- a real bash pressing TAB ------------------------------------------------------------------------------------
@pytest.fixture
def bash(tmp_path: Path):
    """An interactive bash (no rc files) with completions/rhone.bash sourced and the venv's `rhone` first on PATH."""
    pexpect = pytest.importorskip("pexpect")
    bash_path = shutil.which("bash")
    if bash_path is None:
        pytest.skip("bash is not installed")
    prompt = f"RHONE-PROMPT-{uuid.uuid4().hex[:12]}$ "
    environ = {
        "HOME": str(tmp_path),
        "HISTFILE": "/dev/null",
        "PS1": prompt,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]),
        "TERM": "dumb",
        "INPUTRC": "/dev/null",  # readline defaults (emacs keys, no show-all-if-ambiguous), whatever /etc says
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "LANG": "C.UTF-8",
    }
    child = pexpect.spawn(
        bash_path,
        ["--norc", "--noprofile"],
        env=environ,
        cwd=str(tmp_path),
        encoding="utf-8",
        timeout=60,  # an upper bound: each TAB starts a rhone process, slow on a loaded machine
        dimensions=(40, 200),
    )
    try:
        child.expect_exact(prompt)
        child.sendline(f"source {COMPLETIONS / 'rhone.bash'} && echo sourced-$?")
        child.expect_exact("sourced-0")
        child.expect_exact(prompt)
        yield child, prompt
    finally:
        child.close(force=True)


def _line_after_tab(child, prompt: str, typed: str) -> str:
    """Type `typed` (ending in TAB), then `END`, and return the words of the resulting line as bash sees them.

    `END` directly after the completion shows whether bash appended a space (`deploy END` vs `deployEND`). The line is
    then prefixed with a printf (Ctrl-A goes to the start of the line) and run, so only the finished line is printed.
    """
    marker = uuid.uuid4().hex[:8]
    child.send(typed)
    child.send("END")
    child.send("\x01")  # Ctrl-A: beginning of line
    child.send(f"printf '<%s>' {marker} ")
    child.send("\r")
    child.expect(rf"<{marker}>((?:<[^>\r\n]*>)*)")
    words = re.findall(r"<([^>]*)>", child.match.group(1))
    child.expect_exact(prompt)
    return " ".join(words)


def _listing_after_double_tab(child, prompt: str, typed: str) -> list[str]:
    """Type `typed` followed by TAB TAB and return the candidates bash lists (then abandon the line with Ctrl-C)."""
    child.send(typed + "\t\t")
    # bash echoes the line (and rings the bell on the first TAB), prints the candidates on the following lines, then
    # redraws the prompt and the line typed so far.
    child.expect_exact(prompt)
    echoed, _, listing = child.before.partition("\n")
    assert echoed.replace("\x07", "").strip() == typed.strip(), child.before
    child.expect_exact(typed.rstrip())
    child.send("\x03")  # Ctrl-C: abandon the line
    child.expect_exact(prompt)
    return listing.split()


def test_bash_tab_completes_a_unique_command(bash):
    child, prompt = bash
    assert _line_after_tab(child, prompt, "rhone de\t") == "rhone deploy END"


def test_bash_tab_tab_lists_subcommands(bash):
    child, prompt = bash
    listing = _listing_after_double_tab(child, prompt, "rhone config ")
    assert sorted(listing) == ["show", "validate"], listing


def test_bash_tab_tab_lists_argument_choices(bash):
    child, prompt = bash
    listing = _listing_after_double_tab(child, prompt, "rhone completion ")
    assert sorted(listing) == ["bash", "fish", "zsh"], listing


# -- the zsh and fish protocols, through the real console script -------------------------------------------------
def _zsh(rhone_subprocess, line: str):
    return rhone_subprocess(environ={"_RHONE_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": line})


def _fish(rhone_subprocess, line: str, action: str = "get-args"):
    environ = {"_RHONE_COMPLETE": "complete_fish", "_TYPER_COMPLETE_FISH_ACTION": action, "_TYPER_COMPLETE_ARGS": line}
    return rhone_subprocess(environ=environ)


def test_zsh_completes_a_command_prefix(rhone_subprocess):
    result = _zsh(rhone_subprocess, "rhone de")
    assert result.exit_code == 0, result.stderr
    out = result.stdout.strip()
    assert out.startswith("local -a _rhone_values=('deploy') _rhone_shown=(") and out.endswith(
        "compadd -V rhone -l -d _rhone_shown -a _rhone_values"
    ), out
    assert "'deploy  -- Deploy the project in this directory" in out


def test_zsh_lists_subcommands_with_help(rhone_subprocess):
    result = _zsh(rhone_subprocess, "rhone config ")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "_rhone_values=('validate' 'show')" in out, out
    assert re.search(r"'validate  -- Validate rhone\.toml[^']+'", out), out
    assert re.search(r"'show      -- Print the resolved configuration[^']+'", out), out


def test_zsh_falls_back_to_files_for_an_unknown_prefix(rhone_subprocess):
    result = _zsh(rhone_subprocess, "rhone zzz")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "_files\n"


def test_fish_get_args_prints_value_tab_help(rhone_subprocess):
    result = _fish(rhone_subprocess, "rhone de")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, lines
    value, help_text = lines[0].split("\t")
    assert value == "deploy"
    assert help_text.startswith("Deploy the project in this directory"), help_text


def test_fish_get_args_lists_subcommands(rhone_subprocess):
    result = _fish(rhone_subprocess, "rhone config ")
    assert result.exit_code == 0, result.stderr
    assert sorted(line.split("\t")[0] for line in result.stdout.splitlines()) == ["show", "validate"]
    assert all(line.count("\t") == 1 and line.split("\t")[1] for line in result.stdout.splitlines()), result.stdout


@pytest.mark.parametrize(("line", "status"), [("rhone de", 0), ("rhone config ", 0), ("rhone zzz", 1)])
def test_fish_is_args_status_says_whether_there_are_candidates(rhone_subprocess, line, status):
    result = _fish(rhone_subprocess, line, action="is-args")
    assert (result.exit_code, result.stdout) == (status, "")


def test_bash_protocol_through_the_console_script(rhone_subprocess):
    # What completions/rhone.bash sends: the words joined by IFS (a newline) and the index of the current word.
    result = rhone_subprocess(
        environ={"_RHONE_COMPLETE": "complete_bash", "COMP_WORDS": "rhone\nconfig\n", "COMP_CWORD": "2"}
    )
    assert result.exit_code == 0, result.stderr
    assert sorted(result.stdout.split()) == ["show", "validate"]


# -- the walker ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def complete():
    root = command_tree.build(app)

    def run(line: str) -> list[str]:
        words = split_words(line)[1:]
        args, incomplete = (words, "") if line.endswith(" ") or not words else (words[:-1], words[-1])
        return [c.value for c in candidates(root, args, incomplete)]

    return run


def test_options_complete_after_a_subcommand(complete):
    assert complete("rhone config validate --f") == ["--file"]


def test_global_options_complete_after_a_command(complete):
    assert complete("rhone deploy --js") == ["--json"]
    assert complete("rhone config show --no-") == ["--no-color", "--no-input"]


def test_choice_option_values_complete(complete):
    assert complete("rhone --progress ") == ["auto", "plain", "jsonl", "none"]
    assert complete("rhone --progress j") == ["jsonl"]
    assert complete("rhone deploy --progress ") == ["auto", "plain", "jsonl", "none"]


def test_an_option_value_is_skipped(complete):
    assert complete("rhone --profile x de") == ["deploy"]
    assert complete("rhone -C /tmp config v") == ["validate"]
    assert complete("rhone --profile=x de") == ["deploy"]
    assert complete("rhone --json de") == ["deploy"]  # a flag takes no value


def test_an_option_waiting_for_a_free_value_offers_nothing(complete):
    # No names after `--profile ` (the shell falls back to files / `_files`), and never the subcommands.
    assert complete("rhone --profile ") == []


def test_every_top_level_noun_is_offered(complete):
    offered = complete("rhone ")
    assert len(offered) == len(set(offered)), offered
    assert sorted(offered) == sorted(TOP_LEVEL)


def test_argument_choices_complete(complete):
    assert complete("rhone completion ") == ["bash", "zsh", "fish"]
    assert complete("rhone completion f") == ["fish"]
    assert complete("rhone completion bash ") == []


def test_subcommands_of_a_group(complete):
    assert sorted(complete("rhone config ")) == ["show", "validate"]
    assert complete("rhone help e") == ["exit-codes", "environment"]
