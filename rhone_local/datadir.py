"""The data directory: taken by one server at a time, private to its user, refused when using it would lose data.

`open_data_dir` runs before anything else at start-up. It either hands back the store of a data directory this
process now holds, or raises `StartRefused` having changed nothing a running server or a later recovery depends on
(see docs/security.md, "Processes and files").
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rhone_local.store import UNREADABLE_ERRORS, NotRhoneDatabase, SchemaTooNew, Store

LOCK_FILE = "rhone-local.lock"
DATABASE = "rhone.db"
TOKEN_FILE = "owner.token"
LOG_FILE = "rhone-local.log"  # written by `rhone local up`'s redirection of the server's output
# What a data directory holds once a server has used it. Any of these without a database means the database was
# lost: a new one would bootstrap a second workspace over the first's blobs, allocations and token.
STATE_ENTRIES = ("owner.token", "blobs", "deployments", "allocations", "services", "rhone.db-wal")
REFUSED_STATUS = 3
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600


class StartRefused(Exception):
    """This server must not start; nothing in the data directory was changed."""

    def __init__(self, code: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


def open_data_dir(data_dir: Path, store_url: str | None = None) -> Store:
    """Create or take `data_dir` for this process's lifetime and open its store: the SQLite database in it, or the
    PostgreSQL database at `store_url` (`--store`, docs/multi-node.md)."""
    data_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    _refuse_shared(data_dir)
    # Taken before the database is read: a second server of this directory leaves having opened nothing.
    lock_data_dir(data_dir)
    _set_mode(data_dir, PRIVATE_DIR)
    if store_url:
        return open_postgres_store(store_url, data_dir)
    database, log = data_dir / DATABASE, data_dir / LOG_FILE
    _refuse_lost_database(data_dir, database)
    # Created here, 0600, so SQLite's -wal and -shm files (which copy the database's mode) are private from the start.
    os.close(os.open(database, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
    with database_errors(database):
        # A directory that holds state must hold a Rhone Local database: an empty one would be given a new
        # workspace and a new owner token over the old state.
        store = Store(database, must_exist=bool(_state_entries(data_dir)))
    for path in (database, data_dir / f"{DATABASE}-wal", data_dir / f"{DATABASE}-shm", data_dir / TOKEN_FILE, log):
        _set_mode(path, PRIVATE_FILE)
    return store


def open_postgres_store(url: str, data_dir: Path) -> Store:
    """The PostgreSQL store at `url`, migrated; StartRefused (`store_unavailable`) when psycopg is missing or the
    database cannot be reached or used. The message never shows the URL: it may carry a password."""
    hint = "--store postgresql://USER[:PASSWORD]@HOST[:PORT]/DB: a server that is up, a role that may create tables"
    try:
        from rhone_local.store.postgres import PostgresStore
    except ImportError as error:
        raise StartRefused("store_unavailable", f"--store needs {error.name}", "pip install 'rhone[cluster]'") from None
    from rhone_local.store import STORAGE_ERRORS

    try:
        return PostgresStore(url, data_dir)
    except SchemaTooNew as error:
        raise StartRefused(
            "database_too_new", str(error), "upgrade rhone on every node (pip install -U rhone)"
        ) from None
    except NotRhoneDatabase as error:
        raise StartRefused("store_unavailable", str(error), "give --store a database of its own for Rhone") from None
    except STORAGE_ERRORS as error:
        raise StartRefused("store_unavailable", f"the store is not reachable: {error}", hint) from None


def lock_data_dir(data_dir: Path) -> int:
    """An exclusive flock on the data directory itself, held until the process exits — the kernel releases it however
    the process ends (kill -9 included), so there is never a stale lock to clear. Two servers on one directory would
    release each other's leases and run every build twice. The lock is on the directory, not on a file in it: a
    deleted or replaced lock file must not let a second server in. The lock file only names the holder."""
    directory = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 20, 0).decode(errors="replace").strip()
        os.close(fd)
        os.close(directory)
        raise StartRefused(
            "data_dir_in_use",
            f"another Rhone Local server{f' (pid {holder})' if holder.isdigit() else ''} is using {data_dir}",
            f"stop it with `rhone local down --data-dir {data_dir}`, or start this one with another --data-dir",
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # names the holder to the next server that tries
    os.close(fd)
    return directory


@contextmanager
def database_errors(database: Path) -> Iterator[None]:
    """SQLite's refusals of the file (garbage, a truncated image, a newer schema) as a StartRefused naming it."""
    recover = _recover_hint(database)
    try:
        yield
    except SchemaTooNew as error:
        raise StartRefused(
            "database_too_new", str(error), "upgrade rhone to the version that wrote it (pip install -U rhone)"
        ) from None
    except NotRhoneDatabase as error:
        message = f"{error}; this is not a usable Rhone Local database"
        raise StartRefused("database_unreadable", message, recover) from None
    except UNREADABLE_ERRORS as error:
        raise StartRefused(
            "database_unreadable", f"{database} is not a usable Rhone Local database ({error})", recover
        ) from None


def _refuse_shared(data_dir: Path) -> None:
    if data_dir.stat().st_mode & stat.S_ISVTX:
        raise StartRefused(
            "data_dir_shared",
            f"{data_dir} is a shared directory (sticky bit, like /tmp); Rhone Local keeps tokens and secrets in its "
            "data directory and makes it private to you",
            "choose a directory of its own, e.g. `--data-dir ~/.local/share/rhone/local`",
        )


def _recover_hint(database: Path) -> str:
    return (
        f"restore {database.name} from a backup; or, to start afresh, move the whole data directory aside "
        f"(mv {database.parent} {database.parent}.broken) and run `rhone local up` again"
    )


def _state_entries(data_dir: Path) -> list[str]:
    return [name for name in STATE_ENTRIES if (data_dir / name).exists()]


def _refuse_lost_database(data_dir: Path, database: Path) -> None:
    """A missing or empty database is a first start only in a directory that holds no state yet."""
    try:
        status = database.stat()
    except FileNotFoundError:
        size: int | None = None
    else:
        if not stat.S_ISREG(status.st_mode) and status.st_size:
            raise StartRefused("database_unreadable", f"{database} is not a regular file", _recover_hint(database))
        size = status.st_size
    if size:
        return
    leftovers = _state_entries(data_dir)
    if leftovers:
        raise StartRefused(
            "data_dir_broken",
            f"{database} {'is missing' if size is None else 'is empty (0 bytes)'}, but {data_dir} holds Rhone Local "
            f"state ({', '.join(leftovers)}); starting would bootstrap a new workspace over it and replace "
            f"{TOKEN_FILE}",
            f"restore {DATABASE} from a backup; or, to start afresh, move the whole data directory aside "
            f"(mv {data_dir} {data_dir}.broken) and run `rhone local up` again",
        )


def _set_mode(path: Path, mode: int) -> None:
    """Tighten `path` to `mode` (if it exists); files made by an older version were group/world readable."""
    try:
        if stat.S_IMODE(path.stat().st_mode) != mode:
            os.chmod(path, mode)
    except FileNotFoundError:
        pass
