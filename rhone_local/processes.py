"""The processes of an allocation: how a start command runs, which processes belong to it, signalling only those.

An allocation's app must be the process the runner signals, or a graceful shutdown never reaches it: a start command
without shell syntax is executed directly; a single simple command with shell syntax (a variable, a redirection) is
`exec`'d by `/bin/sh -c` so the shell hands its process over to the app; anything else (`cd x && python app.py`) runs
under the shell, and the runner signals the whole process group.

Pids are reused. A process belongs to an allocation only if it is the leader the runner started (same pid AND the same
start time, field 22 of `/proc/<pid>/stat`) or it carries the allocation's id in its environment (every descendant
inherits `RHONE_ALLOCATION_ID`, even one that left the process group). Who listens on an allocation's port is also
judged by descent from those (`descendants`): nginx clears its workers' environment. Nothing else is ever signalled,
so a pid that an unrelated process took over after a crash is left alone (see docs/architecture.md, "Runner").
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
from dataclasses import dataclass
from pathlib import Path

SHELL = "/bin/sh"
REDIRECTIONS = frozenset({"<", ">", ">>", "<<", ">&", "<&", ">|", "<>"})
SHELL_KEYWORDS = frozenset({"if", "for", "while", "until", "case", "{", "!", "function", "select", "exec"})
SHELL_CHARACTERS = frozenset("$`*?[]{}~#\\\n")
_ASSIGNMENTS = re.compile(r"""^\s*(?:[A-Za-z_][A-Za-z0-9_]*=(?:'[^']*'|"(?:[^"\\]|\\.)*"|[^\s'"])*\s+)*""")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def start_argv(command: str) -> list[str]:
    """The argv that runs a start command so that its app is the process the runner signals."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: the shell reports it in the allocation's log
        return [SHELL, "-c", command]
    if not tokens:
        return [SHELL, "-c", command]
    operators = [t for t in tokens if all(ch in "();<>|&" for ch in t)]
    assigns = bool(_ASSIGNMENT.match(tokens[0]))
    if not operators and not assigns and not SHELL_CHARACTERS & set(command) and tokens[0] not in SHELL_KEYWORDS:
        return tokens
    simple = all(op in REDIRECTIONS for op in operators) and "\n" not in command and tokens[0] not in SHELL_KEYWORDS
    if not simple:
        return [SHELL, "-c", command]
    prefix = _ASSIGNMENTS.match(command).group(0)  # `FOO=1 exec app` keeps FOO in the app's environment
    return [SHELL, "-c", f"{prefix}exec {command[len(prefix) :]}"]


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    state: str
    pgid: int
    start_time: int
    ppid: int = 0


def process_info(pid: int) -> ProcessInfo | None:
    """State, process group, start time (clock ticks since boot) and parent of a live process, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state is field 3, ppid field 4, pgrp field 5, starttime field 22 (proc(5)).
    return ProcessInfo(pid, fields[0], int(fields[2]), int(fields[19]), int(fields[1]))


def start_time(pid: int) -> int | None:
    info = process_info(pid)
    return info.start_time if info else None


def _carries(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def allocation_processes(allocation_id: str, leader: int | None, leader_start: int | None) -> list[ProcessInfo]:
    """Live processes (zombies excluded) that belong to the allocation: its verified leader, and every process whose
    environment names the allocation."""
    marker = f"\0RHONE_ALLOCATION_ID={allocation_id}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        info = process_info(int(entry.name))
        if info is None or info.state in ("Z", "X"):
            continue
        verified_leader = info.pid == leader and leader_start is not None and info.start_time == leader_start
        if verified_leader or (info.pid != os.getpid() and _carries(info.pid, marker)):
            found.append(info)
    return found


def descendants(pids: list[int]) -> list[int]:
    """`pids` and every live process descended from one of them, from the parent links in /proc. A server such as
    nginx clears its workers' environment and writes its process title over its own, so the socket it listens on
    is held by processes only their descent ties to the allocation."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = process_info(int(entry.name))
            if info is not None and info.state not in ("Z", "X"):
                parents[info.pid] = info.ppid
    family = set(pids)
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if pid not in family and ppid in family:
                family.add(pid)
                grew = True
    return sorted(family)


def leader_alive(leader: int | None, leader_start: int | None) -> bool:
    """Whether the process the runner started is still running (the same process: its start time matches)."""
    if not leader or leader_start is None:
        return False
    reap(leader)
    info = process_info(leader)
    return info is not None and info.start_time == leader_start and info.state not in ("Z", "X")


def leader_stopped(leader: int | None, leader_start: int | None) -> bool:
    """Whether the verified leader is stopped (SIGSTOP, a debugger): it accepts connections it never answers."""
    info = process_info(leader) if leader else None
    return info is not None and info.start_time == leader_start and info.state in ("T", "t")


def reap(pid: int) -> None:
    """Collect our own child's exit status, so it stops being a zombie that looks alive to kill(0)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def signal_allocation(processes: list[ProcessInfo], leader: int | None, leader_start: int | None, sig: int) -> int:
    """Send `sig` to each verified process, and to the leader's group while the leader is provably ours (it reaches a
    child that forked since the scan). Returns how many processes were signalled."""
    sent = 0
    if leader_alive(leader, leader_start):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leader, sig)
    for info in processes:
        # Signal a process only if it is still the one we verified (its start time), never a reused pid.
        if start_time(info.pid) != info.start_time:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(info.pid, sig)
            sent += 1
        if sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(info.pid, signal.SIGCONT)  # a stopped process acts on SIGTERM only once it runs again
    return sent
