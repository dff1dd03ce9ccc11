"""Workspaces, users and members, projects, apps, environments, runtime identities.

Guarantees: reads see committed rows. Inserts that take a `tx` commit with the caller's transaction; a unique name
taken meanwhile raises `NameTaken` (the transaction then writes nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rhone_local.domain.ids import new_id
from rhone_local.store.core import CONFLICT_ERRORS, NameTaken, StoreCore, Tx, now_iso, row_dict


class TenancyStore(StoreCore):
    # -- bootstrap -----------------------------------------------------------------------------------------------
    def is_bootstrapped(self) -> bool:
        """Whether any workspace exists (bootstrap happens once)."""
        return self.one("SELECT 1 AS x FROM workspaces LIMIT 1") is not None

    def bootstrap(self, *, workspace: str, owner: str, token_hash: str, region: str, cell: str) -> dict[str, str]:
        """The first workspace, its owner with a token, and the primary region with its cell, in one transaction;
        {} when a workspace exists (checked in that write transaction: of nodes starting at once, one bootstraps)."""
        ts = now_iso()
        ids = {
            "workspace_id": new_id("workspace"),
            "user_id": new_id("user"),
            "token_id": new_id("token"),
            "region_id": new_id("region"),
            "cell_id": new_id("cell"),
        }
        with self.write() as c:
            if c.execute("SELECT 1 FROM workspaces LIMIT 1").fetchone() is not None:
                return {}
            c.execute("INSERT INTO workspaces VALUES (?, ?, ?)", (ids["workspace_id"], workspace, ts))
            c.execute("INSERT INTO users VALUES (?, ?, NULL, ?)", (ids["user_id"], owner, ts))
            c.execute("INSERT INTO members VALUES (?, ?, 'owner', ?)", (ids["workspace_id"], ids["user_id"], ts))
            self.create_token(  # type: ignore[attr-defined]
                c,
                subject_kind="user",
                subject_id=ids["user_id"],
                name="bootstrap",
                secret_hash=token_hash,
                workspace_id=ids["workspace_id"],
                role="owner",
                token_id=ids["token_id"],
            )
            c.execute(
                "INSERT INTO regions (id, name, created_at, is_primary) VALUES (?, ?, ?, 1)",
                (ids["region_id"], region, ts),
            )
            c.execute("INSERT INTO cells VALUES (?, ?, ?, ?)", (ids["cell_id"], ids["region_id"], cell, ts))
        return ids

    def bootstrap_workspace(self) -> dict[str, Any] | None:
        """The workspace Rhone Local created on its first start (its owner administers the machine)."""
        return self.one("SELECT * FROM workspaces ORDER BY created_at, id LIMIT 1")

    # -- workspaces and members -----------------------------------------------------------------------------------
    def workspace(self, ref: str) -> dict[str, Any] | None:
        """A workspace by id or name; None if unknown."""
        return self.one("SELECT * FROM workspaces WHERE id = ? OR name = ?", ref, ref)

    def workspaces_of(self, user_id: str) -> list[dict[str, Any]]:
        """The workspaces a user is a member of, with the user's role in each."""
        return self.all(
            "SELECT w.*, m.role FROM workspaces w JOIN members m ON m.workspace_id = w.id "
            "WHERE m.user_id = ? ORDER BY w.id",
            user_id,
        )

    def members(self, workspace_id: str) -> list[dict[str, Any]]:
        """A workspace's members with their roles, in joining order."""
        return self.all(
            "SELECT u.id AS user_id, u.name, u.email, m.role, m.created_at FROM members m "
            "JOIN users u ON u.id = m.user_id WHERE m.workspace_id = ? ORDER BY m.created_at, u.id",
            workspace_id,
        )

    def add_member(self, c: Tx, workspace_id: str, email: str, name: str, role: str) -> dict:
        """In the caller's transaction: the user with this email (created when new) becomes a member with `role`;
        `added` is False when they were one already (nothing changes then)."""
        user = row_dict(c.execute("SELECT * FROM users WHERE email = ?", (email,)).fetchone())
        ts = now_iso()
        if user is None:
            user = {"id": new_id("user"), "name": name, "email": email, "created_at": ts}
            c.execute("INSERT INTO users VALUES (?, ?, ?, ?)", (user["id"], name, email, ts))
        existing = c.execute(
            "SELECT role FROM members WHERE workspace_id = ? AND user_id = ?", (workspace_id, user["id"])
        ).fetchone()
        if existing is not None:
            return {"user_id": user["id"], "name": user["name"], "email": email, "role": existing[0], "added": False}
        c.execute("INSERT INTO members VALUES (?, ?, ?, ?)", (workspace_id, user["id"], role, ts))
        return {
            "user_id": user["id"],
            "name": user["name"],
            "email": email,
            "role": role,
            "added": True,
            "created_at": ts,
        }

    def role_of(self, workspace_id: str, user_id: str) -> str | None:
        """A user's role in a workspace; None if not a member (read at the moment of the check)."""
        row = self.one("SELECT role FROM members WHERE workspace_id = ? AND user_id = ?", workspace_id, user_id)
        return row["role"] if row else None

    def first_owner(self, workspace_id: str) -> dict[str, Any] | None:
        """The workspace's longest-standing owner (the one a locked-out Rhone Local recovers)."""
        return self.one(
            "SELECT u.* FROM members m JOIN users u ON u.id = m.user_id WHERE m.workspace_id = ? AND m.role = 'owner' "
            "ORDER BY m.created_at, u.id LIMIT 1",
            workspace_id,
        )

    # -- projects -------------------------------------------------------------------------------------------------
    def project(self, workspace_id: str, ref: str) -> dict[str, Any] | None:
        """A project of a workspace by id or name; None if unknown."""
        return self.one(
            "SELECT * FROM projects WHERE workspace_id = ? AND (id = ? OR name = ?)", workspace_id, ref, ref
        )

    def project_exists(self, project_id: str) -> bool:
        """Whether the project exists (committed)."""
        return self.one("SELECT 1 AS x FROM projects WHERE id = ?", project_id) is not None

    def project_name_taken(self, workspace_id: str, name: str, *, exclude: str) -> bool:
        """Another project of the workspace (not `exclude`) has this name."""
        row = self.one(
            "SELECT 1 AS x FROM projects WHERE workspace_id = ? AND name = ? AND id != ?", workspace_id, name, exclude
        )
        return row is not None

    def projects_page(
        self, workspace_id: str, *, limit: int, cursor: str | None, newest_first: bool = False
    ) -> list[dict[str, Any]]:
        """A page of a workspace's projects, in id order."""
        return self._page(
            "projects", {"workspace_id": workspace_id}, limit=limit, cursor=cursor, newest_first=newest_first
        )

    def insert_project(self, c: Tx, *, project_id: str, workspace_id: str, name: str, operation_id: str) -> None:
        """In the caller's transaction; NameTaken when the workspace has a project of this name."""
        with _name_taken_on_conflict():
            c.execute(
                "INSERT INTO projects VALUES (?, ?, ?, ?, ?)", (project_id, workspace_id, name, now_iso(), operation_id)
            )

    # -- apps -----------------------------------------------------------------------------------------------------
    def app(self, project_id: str, ref: str) -> dict[str, Any] | None:
        """An app of a project by id or name; None if unknown."""
        return self.one("SELECT * FROM apps WHERE project_id = ? AND (id = ? OR name = ?)", project_id, ref, ref)

    def app_by_id(self, app_id: str) -> dict[str, Any] | None:
        """The app; None if unknown."""
        return self.one("SELECT * FROM apps WHERE id = ?", app_id)

    def app_named_elsewhere(
        self, workspace_id: str, name: str, *, exclude: str, tx: Tx | None = None
    ) -> dict[str, Any] | None:
        """Another app of the workspace with this name (whatever its project), with its project's name: app names
        name routes (`<app>--<env>`), so two apps of one name would claim the same hostnames. Read in `tx` when
        given (a check made where the insert commits)."""
        row = (
            (tx or self.conn)
            .execute(
                "SELECT a.*, p.name AS project FROM apps a JOIN projects p ON p.id = a.project_id "
                "WHERE a.workspace_id = ? AND a.name = ? AND a.id != ? ORDER BY a.id LIMIT 1",
                (workspace_id, name, exclude),
            )
            .fetchone()
        )
        return row_dict(row)

    def apps_page(
        self, project_id: str, *, limit: int, cursor: str | None, newest_first: bool = False
    ) -> list[dict[str, Any]]:
        """A page of a project's apps, in id order."""
        return self._page("apps", {"project_id": project_id}, limit=limit, cursor=cursor, newest_first=newest_first)

    def insert_app(
        self, c: Tx, *, app_id: str, workspace_id: str, project_id: str, name: str, operation_id: str
    ) -> None:
        """In the caller's transaction; NameTaken when the project has an app of this name."""
        with _name_taken_on_conflict():
            c.execute(
                "INSERT INTO apps VALUES (?, ?, ?, ?, ?, ?)",
                (app_id, workspace_id, project_id, name, now_iso(), operation_id),
            )

    # -- environments ---------------------------------------------------------------------------------------------
    def environment(self, app_id: str, ref: str) -> dict[str, Any] | None:
        """An environment of an app by id or name; None if unknown."""
        return self.one("SELECT * FROM environments WHERE app_id = ? AND (id = ? OR name = ?)", app_id, ref, ref)

    def environments_of(self, app_id: str) -> list[dict[str, Any]]:
        """An app's environments in creation order."""
        return self.all("SELECT * FROM environments WHERE app_id = ? ORDER BY id", app_id)

    def environment_by_id(self, environment_id: str) -> dict[str, Any] | None:
        """The environment; None if unknown."""
        return self.one("SELECT * FROM environments WHERE id = ?", environment_id)

    def environment_name_taken(self, app_id: str, name: str, *, exclude: str) -> bool:
        """Another environment of the app (not `exclude`) has this name."""
        row = self.one(
            "SELECT 1 AS x FROM environments WHERE app_id = ? AND name = ? AND id != ?", app_id, name, exclude
        )
        return row is not None

    def environments_page(
        self, app_id: str, *, limit: int, cursor: str | None, newest_first: bool = False
    ) -> list[dict[str, Any]]:
        """A page of an app's environments, in id order."""
        return self._page("environments", {"app_id": app_id}, limit=limit, cursor=cursor, newest_first=newest_first)

    def insert_environment(
        self,
        c: Tx,
        *,
        environment_id: str,
        workspace_id: str,
        app_id: str,
        name: str,
        approval_required: bool,
        frozen: bool,
        operation_id: str,
    ) -> None:
        """In the caller's transaction; NameTaken when the app has an environment of this name."""
        with _name_taken_on_conflict():
            c.execute(
                "INSERT INTO environments (id, workspace_id, app_id, name, approval_required, frozen, created_at, "
                "operation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    environment_id,
                    workspace_id,
                    app_id,
                    name,
                    int(approval_required),
                    int(frozen),
                    now_iso(),
                    operation_id,
                ),
            )

    def update_environment(self, c: Tx, environment_id: str, **policy: bool) -> dict[str, Any]:
        """Set policy columns (`frozen`, `approval_required`) of an environment in the caller's transaction; its row."""
        assert set(policy) <= {"frozen", "approval_required"}
        sets = ", ".join(f"{name} = ?" for name in policy)
        c.execute(f"UPDATE environments SET {sets} WHERE id = ?", (*(int(v) for v in policy.values()), environment_id))
        return row_dict(c.execute("SELECT * FROM environments WHERE id = ?", (environment_id,)).fetchone())  # type: ignore[return-value]

    def set_instances(self, environment_id: str, instances: int) -> None:
        """The environment's desired instance count, committed at once (a promotion from then on starts this many)."""
        with self.write() as c:
            c.execute("UPDATE environments SET instances = ? WHERE id = ?", (instances, environment_id))

    # -- runtime identities ---------------------------------------------------------------------------------------
    def create_runtime_identity(self, c: Tx, workspace_id: str, app_id: str) -> dict[str, Any]:
        """In the caller's transaction (the app's creation): the app's runtime identity."""
        identity = {
            "id": new_id("runtime_identity"),
            "workspace_id": workspace_id,
            "app_id": app_id,
            "created_at": now_iso(),
        }
        c.execute("INSERT INTO runtime_identities VALUES (?, ?, ?, ?)", tuple(identity.values()))
        return identity

    def runtime_identity_of(self, app_id: str) -> dict[str, Any] | None:
        """The app's first runtime identity (the one its allocations' tokens act for)."""
        return self.one("SELECT * FROM runtime_identities WHERE app_id = ? ORDER BY id LIMIT 1", app_id)


@contextmanager
def _name_taken_on_conflict() -> Iterator[None]:
    """The unique index's refusal of an insert, as NameTaken (the caller's transaction rolls back)."""
    try:
        yield
    except CONFLICT_ERRORS as error:
        raise NameTaken(str(error)) from error
