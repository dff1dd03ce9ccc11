"""Where builds and apps run: a bubblewrap sandbox, or (where none is available) the control plane's own world.

A sandboxed process sees the system's read-only directories (`/usr` and the merged-usr links, the few files of `/etc`
programs need), its own tree at `/app` (read-write), a private `/tmp`, `/proc` and `/dev`, a private `HOME` on a tmpfs,
a per-app cache at `/cache` (builds only), whatever the operator exposed with `--sandbox-ro`, and the network. It sees
nothing of the control plane: not the data directory, not Rhone Local's own Python, not other apps. It runs as uid
1000 inside a user namespace of its own, with no capabilities, in its own pid namespace and session (see
docs/security.md, "Apps and builds").

`Sandbox.argv` is pure: it turns a command, the tree to run it in and the extra binds into the argv to spawn. The
environment is never part of the argv (argv is world-readable in `/proc`); the caller hands it to `Popen(env=…)`,
which bubblewrap passes through. `detect` decides the mode once, at start-up, by running a trial sandbox.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import select
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger("rhone_local.sandbox")

APP_ROOT = "/app"
CACHE_ROOT = "/cache"
HOME = "/home/app"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
SANDBOX_UID = 1000
MODES = ("auto", "bubblewrap", "none")
INFO_TIMEOUT = 10.0  # seconds bubblewrap has to report its pid 1 (it does so right after cloning)

# Directories every allocation has, read-only. A symlink in the host (merged /usr: /bin -> usr/bin) stays a symlink.
SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib32", "/lib64", "/libx32", "/sbin")
# The parts of /etc that programs need: name resolution, TLS roots, time zone, the dynamic linker, interpreters'
# site configuration. Not the rest (host users' shadow files, host services' configuration).
ETC_ENTRIES = (
    "resolv.conf", "hosts", "host.conf", "nsswitch.conf", "gai.conf", "ssl", "ca-certificates",
    "ca-certificates.conf", "pki", "alternatives", "localtime", "timezone", "zoneinfo", "mime.types", "protocols",
    "services", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "os-release", "pip.conf", "python3", "npmrc",
)  # fmt: skip
# What `ps`, `whoami` and friends find in /etc/passwd inside: the sandbox's own users, not the host's.
PASSWD = f"root:x:0:0:root:/root:/usr/sbin/nologin\napp:x:{SANDBOX_UID}:{SANDBOX_UID}:app:{HOME}:/bin/sh\n"
GROUP = f"root:x:0:\napp:x:{SANDBOX_UID}:\n"


@dataclass(frozen=True)
class Bind:
    source: Path  # on the host
    target: str  # inside the sandbox
    writable: bool = False


@dataclass(frozen=True)
class Sandbox:
    mode: str  # "bubblewrap" or "none"
    bwrap: str | None = None
    reason: str | None = None  # why there is no sandbox (mode "none")
    system: tuple[str, ...] = ()  # argv fragment exposing the system's read-only directories
    extra_ro: tuple[str, ...] = ()  # host paths the operator exposed read-only (`--sandbox-ro`), at the same path
    disable_userns: bool = False  # whether this bwrap can forbid nested user namespaces
    etc_dir: Path | None = None  # the sandbox's /etc: copies of the host's few files, its own passwd and group
    notes: tuple[str, ...] = field(default=())

    @property
    def sealed(self) -> bool:
        return self.mode == "bubblewrap"

    def visible(self, root: Path, *, cache: Path | None = None, home: Path) -> dict[str, str]:
        """Where the process sees its tree, its cache and its HOME (the environment names these paths)."""
        if self.sealed:
            return {"app": APP_ROOT, "cache": CACHE_ROOT if cache else "", "home": HOME}
        return {"app": str(root), "cache": str(cache) if cache else "", "home": str(home)}

    def argv(
        self,
        command: str | Sequence[str],
        *,
        root: Path,
        binds: Sequence[Bind] = (),
        build: bool = False,
        info_fd: int | None = None,
    ) -> list[str]:
        """The argv that runs `command` (a shell command line, or an argv to execute as it is) in `root`.

        Inside, the command runs under a shell that, once the command exits, kills whatever it left behind in the
        pid namespace: a background process (same group or `setsid`) never outlives its build or app. That shell
        survives the SIGTERM a drain sends to every process of the allocation (the app gets it too, with its default
        disposition: a caught signal is reset on exec), so the app's graceful shutdown is not cut short. A build also
        dies with its caller (`--die-with-parent`). An allocation does not: it must outlive a crash of Rhone Local,
        which adopts it on restart. Its process group's leader is the sandbox's pid 1 (reported on `info_fd`), so
        stopping that group stops the whole sandbox."""
        inner = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        if not self.sealed:
            return inner
        argv = [self.bwrap or "bwrap", "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-cgroup-try"]
        argv += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--new-session"]
        if self.disable_userns:
            argv.append("--disable-userns")
        if build:
            argv.append("--die-with-parent")
        if info_fd is not None:
            argv += ["--info-fd", str(info_fd)]
        argv += list(self.system)
        argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/home", "--dir", HOME]
        for path in self.extra_ro:  # after the tmpfs mounts, which would hide a path under /tmp or /home
            argv += ["--ro-bind", path, path]
        argv += ["--bind", str(root), APP_ROOT]
        for bind in binds:
            argv += ["--bind" if bind.writable else "--ro-bind", str(bind.source), bind.target]
        # The sandbox's own root (where /etc's few files are mounted) becomes read-only: only its mounts are writable.
        argv += ["--remount-ro", "/", "--chdir", APP_ROOT, "--", "/bin/sh", "-c", REAPER, "rhone-sandbox", *inner]
        return argv

    def spawn(
        self,
        command: str | Sequence[str],
        *,
        root: Path,
        env: Mapping[str, str],
        log: IO[bytes],
        binds: Sequence[Bind] = (),
        build: bool = False,
    ) -> tuple[subprocess.Popen, int]:
        """Start `command` in its own session, output to `log`. Returns the process and the pid leading its process
        group: the one to signal to stop everything it started."""
        if self.etc_dir is not None:
            refresh_etc(self.etc_dir)
        if not self.sealed:
            child = subprocess.Popen(
                self.argv(command, root=root), cwd=root, env=dict(env), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            return child, child.pid
        read, write = os.pipe()
        try:
            child = subprocess.Popen(
                self.argv(command, root=root, binds=binds, build=build, info_fd=write), cwd=root, env=dict(env),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                pass_fds=(write,),
            )  # fmt: skip
        finally:
            os.close(write)
        return child, _sandbox_pid(read) or child.pid


# Runs its arguments (the command's argv), then kills what it left in the pid namespace and exits with its status.
# It runs them in the foreground (a background job would start with SIGINT and SIGQUIT ignored) and catches the
# signals a stop sends — a no-op trap, deferred until the command ends — so it outlives the app's graceful shutdown.
REAPER = 'trap : TERM INT HUP; "$@"; status=$?; kill -KILL -1 2>/dev/null; exit $status'


def _sandbox_pid(read: int) -> int | None:
    """The sandbox's pid 1, as bubblewrap reports it on its info fd (closed, empty, when bubblewrap failed)."""
    with os.fdopen(read, "rb") as info:
        ready, _, _ = select.select([info], [], [], INFO_TIMEOUT)
        text = info.read() if ready else b""
    try:
        return int(json.loads(text)["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None


def base_environment(sandbox: Sandbox, root: Path, *, home: Path, cache: Path | None = None) -> dict[str, str]:
    """The environment every build and app starts from: the system's PATH, a private HOME, and for builds the
    package managers' caches under the per-app cache. Nothing of Rhone Local's own environment."""
    where = sandbox.visible(root, cache=cache, home=home)
    environment = {"PATH": SYSTEM_PATH, "HOME": where["home"], "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
    if cache is not None:
        c = where["cache"]
        environment.update(
            XDG_CACHE_HOME=c,
            PIP_CACHE_DIR=f"{c}/pip",
            npm_config_cache=f"{c}/npm",
            GOCACHE=f"{c}/go-build",
            GOMODCACHE=f"{c}/go-mod",
            GOPATH=f"{c}/go",
        )
    return environment


def _etc_entries() -> list[str]:
    names = {name for name in ETC_ENTRIES if os.path.exists(f"/etc/{name}")}  # a dangling link is left out
    return sorted(names | {os.path.basename(p) for p in glob.glob("/etc/python3*")})


def _system_binds(etc_dir: Path) -> tuple[str, ...]:
    """The system's directories, then the sandbox's /etc (one mount: `etc_dir`, see `refresh_etc`) with the host's
    directories among ETC_ENTRIES (certificates, alternatives…) mounted into it. Few mounts: each costs start time."""
    argv: list[str] = []
    for directory in SYSTEM_DIRS:
        if os.path.islink(directory):
            argv += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            argv += ["--ro-bind", directory, directory]
    argv += ["--ro-bind", str(etc_dir), "/etc"]
    for name in _etc_entries():
        if os.path.isdir(f"/etc/{name}"):
            argv += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    return tuple(argv)


def refresh_etc(etc_dir: Path) -> None:
    """Keep the sandbox's /etc in step with the host's: its small files copied (again when they changed: a new
    resolv.conf reaches the next build or app), links kept as links, a mount point for each directory, and the
    sandbox's own passwd and group. Each write is atomic, so a sandbox starting meanwhile sees old or new."""
    etc_dir.mkdir(parents=True, exist_ok=True)
    wanted = {"passwd": PASSWD.encode(), "group": GROUP.encode()}
    for name in _etc_entries():
        host, copy = Path("/etc") / name, etc_dir / name
        real = os.path.realpath(host)
        if os.path.isdir(real):
            copy.mkdir(exist_ok=True)  # a mount point: the directory itself is mounted there
        elif host.is_symlink() and real.startswith("/usr/"):  # localtime -> /usr/share/zoneinfo/…: there inside
            # Absolute, so it leads to the same file from the host (a copy of the data directory stays whole).
            if not copy.is_symlink() or os.readlink(copy) != real:
                _replace(copy, lambda tmp, real=real: os.symlink(real, tmp))
        else:  # a file, or a link to one outside /usr (resolv.conf -> /run/…): its content
            with contextlib.suppress(OSError):
                wanted[name] = Path(real).read_bytes()
    for name, data in wanted.items():
        copy = etc_dir / name
        if copy.is_symlink() or not copy.is_file() or copy.read_bytes() != data:
            _replace(copy, lambda tmp, data=data: Path(tmp).write_bytes(data))


def _replace(path: Path, make: Callable[[str], object]) -> None:
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    make(temporary)
    os.replace(temporary, path)


def _trial(sandbox: Sandbox) -> str | None:
    """Run `true` in the sandbox; None when it works, else why not."""
    argv = sandbox.argv("true", root=sandbox.etc_dir or Path("/tmp"), build=True)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, env={"PATH": SYSTEM_PATH})
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{sandbox.bwrap} could not run: {error}"
    if done.returncode != 0:
        return f"{sandbox.bwrap} failed: {(done.stderr or done.stdout).strip()[:300]}"
    return None


def detect(requested: str, *, state_dir: Path, extra_ro: Sequence[str] = ()) -> Sandbox:
    """The sandbox this server uses. `auto` takes bubblewrap when it works and falls back to none (saying why);
    `bubblewrap` requires it (ValueError when it does not work); `none` runs builds and apps unsealed."""
    if requested not in MODES:
        raise ValueError(f"unknown sandbox mode {requested!r}; choose one of {', '.join(MODES)}")
    extra = tuple(str(Path(p).resolve()) for p in extra_ro)
    for path in extra:
        if not os.path.exists(path):
            raise ValueError(f"--sandbox-ro {path}: no such file or directory")
    if requested == "none":
        return Sandbox("none", reason="turned off (--sandbox none)")
    bwrap = shutil.which("bwrap", path=SYSTEM_PATH) or shutil.which("bwrap")
    if bwrap is None:
        reason = "bubblewrap (bwrap) is not installed; install it with `apt-get install bubblewrap`"
        if requested == "bubblewrap":
            raise ValueError(reason)
        return Sandbox("none", reason=reason)
    etc_dir = state_dir / "etc"
    refresh_etc(etc_dir)
    candidate = Sandbox(
        "bubblewrap", bwrap, system=_system_binds(etc_dir), extra_ro=extra, disable_userns=True, etc_dir=etc_dir
    )
    failure = _trial(candidate)
    if failure is not None and "disable-userns" in failure:
        # An older bubblewrap: nested user namespaces stay possible (they grant nothing outside the sandbox).
        candidate = Sandbox(
            "bubblewrap",
            bwrap,
            system=candidate.system,
            extra_ro=extra,
            etc_dir=etc_dir,
            notes=("no --disable-userns",),
        )
        failure = _trial(candidate)
    if failure is None:
        return candidate
    reason = f"bubblewrap does not work here ({failure}); user namespaces may be disabled"
    if requested == "bubblewrap":
        raise ValueError(reason)
    return Sandbox("none", reason=reason)


def exposure_warning(sandbox: Sandbox) -> str | None:
    """What `rhone local up` says when builds and apps run unsealed."""
    if sandbox.sealed:
        return None
    return (
        f"builds and apps run without a sandbox: {sandbox.reason}. They run as this user and can read everything "
        "it can, including the data directory (rhone.db with every secret, owner.token) and other apps' files"
    )


def describe(sandbox: Sandbox) -> dict[str, object]:
    return {"mode": sandbox.mode, "reason": sandbox.reason, "read_only_paths": list(sandbox.extra_ro)}
