"""TAB in real bash, zsh and fish with the committed completion scripts: deployment ids newest first (with their state
where the shell shows descriptions), environment names, and quiet fallback when the API is down.

bash and zsh run interactively in a pseudo-terminal (pexpect): bash's completion function is called with given words
and a TAB finishes a unique id; zsh lists candidates on a TAB. fish answers `complete --do-complete`, its own
completion engine. The API is the real app on a loopback port. A shell that is not installed skips its tests
(`.ci/run` installs zsh and fish).
"""

from __future__ import annotations

import io
import itertools
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO, default_signal_dispositions

from .conftest import BASE, SHOP_WEB_TOML, LocalEnv, queued_deployments

pytestmark = pytest.mark.slow

COMPLETIONS = REPO / "completions"
APP = f"{BASE}/projects/shop/apps/web"


@pytest.fixture
def shop(local: LocalEnv, live_url: str, tmp_path: Path) -> dict:
    local.create_app(local.create_project("shop"), "web")
    project = tmp_path / "shop"
    project.mkdir()
    (project / "rhone.toml").write_text(SHOP_WEB_TOML)
    home = tmp_path / "home"
    home.mkdir()
    environ = {
        "HOME": str(home),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
        "TERM": "dumb",
        "LANG": "C.UTF-8",
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "RHONE_CONFIG_DIR": str(home / "config"),
        "RHONE_CACHE_DIR": str(tmp_path / "cache"),
        "RHONE_API_URL": live_url,
        "RHONE_TOKEN": local.owner.token,
        # Generous here (the API shares this test's process on a loaded machine); the timeout has its own test.
        "RHONE_COMPLETION_TIMEOUT": "10",
    }
    return {"dir": project, "environ": environ, "deployments": queued_deployments(local, APP, 3)[::-1]}


def _shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path


def _interactive(shell: list[str], setup: str, shop: dict):
    pexpect = pytest.importorskip("pexpect")
    prompt = f"P{uuid.uuid4().hex[:8]}> "
    child = pexpect.spawn(
        shell[0], shell[1:], env={**shop["environ"], "HISTFILE": "/dev/null", "INPUTRC": "/dev/null"},
        cwd=str(shop["dir"]), encoding="utf-8", timeout=60, dimensions=(40, 220),
        preexec_fn=default_signal_dispositions,  # Ctrl-C is sent to it
    )  # fmt: skip
    child.logfile_read = io.StringIO()  # the transcript, for failure messages
    child.sendline(f"PS1='{prompt}'; {setup} && echo ready-$?")
    child.expect_exact("ready-0")
    child.expect_exact(prompt)
    return child, prompt


def _zsh_listing(child, prompt: str, typed: str, candidates: list[str]) -> str:
    """What zsh lists for `typed`: one TAB inserts the candidates' common prefix; then, on a fresh line with that
    prefix typed, one TAB has nothing left to insert and lists them (AUTO_LIST). Each line is abandoned with Ctrl-C.

    zsh apparently shows a completion before its widget has quite finished, and a key or a Ctrl-C arriving in that
    moment was seen dropped (under load); so every key waits until zsh is blocked reading the terminal, with no child
    running (`_send`)."""
    same = itertools.takewhile(lambda chars: len(set(chars)) == 1, zip(*candidates, strict=False))
    common = "".join(chars[0] for chars in same)
    _send(child, typed + "\t")
    _expect(child, typed + common)
    _send(child, "\x03")
    _expect(child, prompt)
    _send(child, typed + common + "\t")
    _expect(child, prompt)
    listing = child.before
    _send(child, "\x03")
    _expect(child, prompt)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", listing)


READ_SYSCALL = {"x86_64": "0", "aarch64": "63"}  # read(2)'s number, first in /proc/PID/syscall while blocked in it


def _send(child, keys: str) -> None:
    """Type `keys` once the shell waits for them: asleep in a read of its terminal, with no child process (a
    completion's `rhone`). Twice in a row, 20 ms apart, so that a moment between two steps of a widget is not taken
    for it."""
    proc = Path(f"/proc/{child.pid}")
    deadline, calm = time.monotonic() + 60, 0
    while calm < 2:
        if not child.isalive() or time.monotonic() > deadline:
            pytest.fail(f"the shell never waited for input; {_shell_state(child)}")
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            children = (proc / "task" / str(child.pid) / "children").read_text().strip()
        except OSError:
            state, children = "?", ""
        idle = state == "S" and not children and _reading_its_terminal(proc)
        calm = calm + 1 if idle else 0
        if calm < 2:
            time.sleep(0.02)
    child.send(keys)


def _reading_its_terminal(proc: Path) -> bool:
    """Whether the process is blocked in read(2) on a terminal: from /proc/PID/syscall (the call and its fd) where
    this machine's numbering is known and the file readable, else from where it sleeps."""
    number = READ_SYSCALL.get(os.uname().machine)
    try:
        call = (proc / "syscall").read_text().split()
    except OSError:
        call = []
    if number is not None and len(call) > 1:
        try:
            return call[0] == number and os.readlink(proc / "fd" / str(int(call[1], 16))).startswith("/dev/pts/")
        except (OSError, ValueError):
            return False
    try:
        return (proc / "wchan").read_text() in ("wait_woken", "n_tty_read")
    except OSError:
        return False


def _expect(child, text: str) -> None:
    """`child.expect_exact(text)`, failing with the shell's state (`_shell_state`)."""
    pexpect = pytest.importorskip("pexpect")
    try:
        child.expect_exact(text)
    except pexpect.TIMEOUT:
        pytest.fail(f"the shell never printed {text!r}; {_shell_state(child)}")


def _shell_state(child) -> str:
    """For a failure message: what the shell printed last (its transcript is kept for this) and what it and its
    children are doing."""
    tree = subprocess.run(
        ["ps", "-o", "pid,ppid,stat,wchan:20,etime,args", "--ppid", str(child.pid), "-p", str(child.pid)],
        capture_output=True,
        text=True,
    ).stdout
    return f"its last output: {child.logfile_read.getvalue()[-3000:]!r}\n{tree}"


def _bash_compreply(child, prompt: str, words: list[str]) -> list[str]:
    """The script's completion function, called by bash itself for `words` (the last one being typed)."""
    marker = uuid.uuid4().hex[:8]
    quoted = " ".join(f"'{w}'" for w in words)
    child.sendline(
        f'COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _rhone_completion rhone; printf "<%s>" {marker} '
        '"${COMPREPLY[@]}"; echo'
    )
    child.expect(rf"<{marker}>((?:<[^>\r\n]*>)*)")
    found = re.findall(r"<([^>]*)>", child.match.group(1))
    child.expect_exact(prompt)
    return found


def test_bash_offers_deployment_ids_newest_first_and_tab_completes_one(shop):
    child, prompt = _interactive(
        [_shell("bash"), "--norc", "--noprofile", "-i"], f"source {COMPLETIONS / 'rhone.bash'}", shop
    )
    try:
        assert _bash_compreply(child, prompt, ["rhone", "deploy", "show", ""]) == shop["deployments"]
        assert _bash_compreply(child, prompt, ["rhone", "route", "history", ""]) == ["preview", "production"]
        newest = shop["deployments"][0]
        marker = uuid.uuid4().hex[:8]
        child.send(f"rhone deploy show {newest[:-2]}\t")  # a unique prefix: TAB finishes the id and adds a space
        child.send("END")
        child.sendcontrol("a")  # then run the finished line as printf's arguments, to read it back word by word
        child.send(f"printf '<%s>' {marker} \r")
        child.expect(rf"<{marker}>((?:<[^>\r\n]*>)*)")
        assert re.findall(r"<([^>]*)>", child.match.group(1)) == ["rhone", "deploy", "show", newest, "END"]
        child.expect_exact(prompt)
    finally:
        child.close(force=True)


def test_zsh_lists_deployment_ids_newest_first_with_their_state(shop):
    setup = f"autoload -Uz compinit && compinit -u -D && source {COMPLETIONS / 'rhone.zsh'}"
    child, prompt = _interactive([_shell("zsh"), "-f", "-i"], setup, shop)
    try:
        listed = _zsh_listing(child, prompt, "rhone deploy show ", shop["deployments"])
        rows = [line.strip() for line in listed.splitlines() if line.strip().startswith("dep_")]
        assert [row.split()[0] for row in rows] == shop["deployments"], listed
        assert all("-- queued preview" in row for row in rows)
        environments = _zsh_listing(child, prompt, "rhone route history ", ["preview", "production"])
        assert "preview" in environments and "production" in environments
    finally:
        child.close(force=True)


def _fish(shop: dict, line: str, environ: dict | None = None) -> subprocess.CompletedProcess:
    script = f"source {COMPLETIONS / 'rhone.fish'}; complete --do-complete '{line}'"
    return subprocess.run(
        [_shell("fish"), "--no-config", "-c", script],
        env={**shop["environ"], **(environ or {})},
        cwd=shop["dir"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_fish_lists_deployment_ids_newest_first_with_their_state(shop):
    done = _fish(shop, "rhone deploy show ")
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [row[0] for row in rows] == shop["deployments"]  # --keep-order
    assert all(row[1].startswith("queued preview") for row in rows)
    assert _fish(shop, "rhone env show pro").stdout.split() == ["production"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_with_the_api_down_completion_falls_back_quietly(shop, shell):
    down = {"RHONE_API_URL": "http://127.0.0.1:9"}
    if shell == "fish":
        done = _fish(shop, "rhone deploy show ", down)
        assert (done.returncode, done.stdout, done.stderr) == (0, "rhone.toml\n", "")  # fish's own file names
        assert _fish(shop, "rhone dep", down).stdout.startswith("deploy\t")
        return
    shop = {**shop, "environ": {**shop["environ"], **down}}
    if shell == "bash":
        child, _ = _interactive(
            [_shell("bash"), "--norc", "--noprofile", "-i"], f"source {COMPLETIONS / 'rhone.bash'}", shop
        )
    else:
        setup = f"autoload -Uz compinit && compinit -u -D && source {COMPLETIONS / 'rhone.zsh'}"
        child, _prompt = _interactive([_shell("zsh"), "-f", "-i"], setup, shop)
    try:
        child.send("rhone deploy show \t\t")
        child.expect("rhone.toml")  # the shell's own file-name completion, after rhone offered nothing
        shown = child.before
        assert "error" not in shown and "Traceback" not in shown and "dep_" not in shown
    finally:
        child.close(force=True)
