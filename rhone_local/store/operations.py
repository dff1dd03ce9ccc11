"""Operations: creation, leases, and every stage recorded by compare-and-swap.

Guarantees: `claim_operation` leases one runnable operation to one worker in one statement (two workers never hold
the same lease); `advance_operation` records a stage only if the operation is still at the version the caller read
(and leased to the caller, with a lease not yet expired, when it names itself), renewing the lease in the same
write — a stale writer changes nothing and gets None. Leases are times on the database's clock (`rhone_now()`), never
a worker's: nodes whose clocks disagree still agree on when a lease expires.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rhone_local.domain.access import Principal
from rhone_local.domain.ids import new_id
from rhone_local.domain.operations import MACHINES, TERMINAL_STATES, KindStates
from rhone_local.store.core import StoreCore, Tx, marks, now_iso, row_dict


class OperationStore(StoreCore):
    def create_operation(
        self,
        c: Tx,
        *,
        workspace_id: str,
        kind: str,
        target_kind: str,
        target_id: str,
        params: dict,
        principal: Principal,
        request_id: str,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        """In the caller's transaction (the request's unit of work): the operation in its kind's first state."""
        ts = now_iso()
        first = MACHINES[kind].happy_path[0]  # queued, or requested for promotions
        op = {
            "id": new_id("operation"),
            "workspace_id": workspace_id,
            "kind": kind,
            "state": first,
            "version": 1,
            "target_kind": target_kind,
            "target_id": target_id,
            "params": params,
            "stages": [{"state": first, "entered_at": ts, "evidence": {}, "error": None}],
            "error": None,
            "actor_kind": principal.kind,
            "actor_id": principal.id,
            "idempotency_key": idempotency_key,
            "request_id": request_id,
            "created_at": ts,
            "updated_at": ts,
            "lease_owner": None,
            "lease_until": None,
        }
        c.execute(
            "INSERT INTO operations VALUES (:id, :workspace_id, :kind, :state, :version, :target_kind, :target_id, "
            ":params, :stages, NULL, :actor_kind, :actor_id, :idempotency_key, :request_id, :created_at, "
            ":updated_at, NULL, NULL)",
            {**op, "params": json.dumps(params), "stages": json.dumps(op["stages"])},
        )
        return op

    def operation(self, op_id: str) -> dict[str, Any] | None:
        """The operation, as committed now; None if unknown."""
        return self.one("SELECT * FROM operations WHERE id = ?", op_id)

    def claim_operation(
        self,
        worker: str,
        lease_seconds: float,
        terminal: frozenset[str],
        *,
        within: Sequence[KindStates] = (),
        outside: Sequence[KindStates] = (),
    ) -> dict[str, Any] | None:
        """Lease the oldest runnable operation (not terminal, lease free or expired) to `worker`; None if none.
        `within`: only operations matching one of these (kind, states) clauses (states None: any state);
        `outside`: only operations matching none of them. The UPDATE takes the write lock (SQLite) or skips the rows
        another claimer has locked and checks the lease again on the row it updates (PostgreSQL), so two workers
        never lease the same operation."""
        filters, args = "", []
        for clauses, negate in ((within, False), (outside, True)):
            if not clauses:
                continue
            matches = []
            for kind, states in clauses:
                if states is None:
                    matches.append("kind = ?")
                    args.append(kind)
                else:
                    matches.append(f"(kind = ? AND state IN ({marks(states)}))")
                    args.extend((kind, *sorted(states)))
            filters += f"AND {'NOT ' if negate else ''}({' OR '.join(matches)}) "
        row = self.conn.execute(
            f"UPDATE operations SET lease_owner = ?, lease_until = rhone_now() + ? WHERE id = ("
            f"  SELECT id FROM operations WHERE state NOT IN ({marks(terminal)}) {filters}"
            f"  AND (lease_until IS NULL OR lease_until < rhone_now()) ORDER BY id LIMIT 1{self.SKIP_LOCKED}"
            f") AND (lease_until IS NULL OR lease_until < rhone_now()) RETURNING *",
            (worker, lease_seconds, *sorted(terminal), *args),
        ).fetchone()
        return row_dict(row)

    def advance_operation(
        self,
        op: dict[str, Any],
        new_state: str,
        *,
        evidence: dict | None = None,
        error: dict | None = None,
        worker: str | None = None,
        lease_seconds: float = 30.0,
        tx: Tx | None = None,
    ) -> dict[str, Any] | None:
        """Record `new_state` iff the operation is still at `op['version']` (and leased to `worker`, if given, by a
        lease not expired yet, which the same write renews), in `tx` when given (with the stage's effect), else at once.

        Returns the updated operation, or None when the write was stale and changed nothing.
        """
        stage = {"state": new_state, "entered_at": now_iso(), "evidence": evidence or {}, "error": error}
        sql = (
            "UPDATE operations SET state = ?, version = version + 1, stages = json_insert(stages, '$[#]', json(?)), "
            "error = COALESCE(?, error), updated_at = ? WHERE id = ? AND version = ?"
        )
        args: list[Any] = [
            new_state,
            json.dumps(stage),
            json.dumps(error) if error else None,
            stage["entered_at"],
            op["id"],
            op["version"],
        ]
        if worker is not None:
            sql = sql.replace("updated_at = ?", "updated_at = ?, lease_until = rhone_now() + ?")
            args.insert(4, lease_seconds)
            sql += " AND lease_until >= rhone_now() AND lease_owner = ?"
            args.append(worker)
        row = (tx or self.conn).execute(sql + " RETURNING *", args).fetchone()
        return row_dict(row)

    def renew_lease(self, op_id: str, worker: str, lease_seconds: float) -> bool:
        """Extend `worker`'s lease; False when it holds it no longer, or it expired (another worker may have claimed
        the operation since): its next stage write will be stale."""
        cursor = self.conn.execute(
            "UPDATE operations SET lease_until = rhone_now() + ? WHERE id = ? AND lease_owner = ? "
            "AND lease_until >= rhone_now()",
            (lease_seconds, op_id, worker),
        )
        return cursor.rowcount == 1

    def release_leases_except(self, owner_prefix: str, *, node_prefix: str = "", legacy: bool = True) -> int:
        """Free the leases of this node's previous processes: held by a worker named `node_prefix…` but not
        `owner_prefix…` (this process's workers); with `legacy`, also those named without a node (a server from before
        nodes existed — the default node's previous process).

        Called once at start-up: one process holds a node's name (docs/multi-node.md, "Nodes"), so a lease from
        another process of the same node belongs to one that died — without this its operations would wait for the
        lease to expire before resuming. Other nodes' leases are theirs: left alone. A store several servers share
        (PostgreSQL) frees nothing: a lease is taken over only once it expired on the database's clock
        (`claim_operation`)."""
        if not self.SINGLE_OWNER:
            return 0
        cursor = self.conn.execute(
            "UPDATE operations SET lease_owner = NULL, lease_until = NULL "
            "WHERE lease_owner IS NOT NULL AND lease_owner NOT LIKE ? || '%' "
            "AND ((? != '' AND lease_owner LIKE ? || '%') OR (? = 1 AND lease_owner NOT LIKE '%/%'))",
            (owner_prefix, node_prefix, node_prefix, int(legacy)),
        )
        return cursor.rowcount

    def release_operation(self, op_id: str, worker: str) -> None:
        """Give the lease up, if `worker` still holds it (a worker that lost it changes nothing)."""
        self.conn.execute(
            "UPDATE operations SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?",
            (op_id, worker),
        )

    def live_operations(
        self, c: Tx, environment_id: str, kinds: tuple[str, ...], *, exclude: str
    ) -> list[dict[str, Any]]:
        """Unfinished operations of `kinds` on an environment (read in the caller's write transaction: of two
        requests that check this and then create an operation, the second sees the first's)."""
        rows = c.execute(
            f"SELECT id, kind, state FROM operations WHERE kind IN ({marks(kinds)}) AND id != ? "
            f"AND state NOT IN ({marks(TERMINAL_STATES)}) "
            "AND json_extract(params, '$.environment_id') = ? ORDER BY id",
            (*kinds, exclude, *sorted(TERMINAL_STATES), environment_id),
        ).fetchall()
        return [dict(r) for r in rows]

    def scaling(self, environment_id: str) -> bool:
        """A scale operation of the environment is under way (it converges the instances itself)."""
        return (
            self.one(
                "SELECT 1 AS x FROM operations WHERE kind = 'scale' AND state NOT IN ('scaled', 'failed') "
                "AND json_extract(params, '$.environment_id') = ? LIMIT 1",
                environment_id,
            )
            is not None
        )

    def promotion_under_way(self, deployment_id: str, environment_id: str, *, exclude: str) -> bool:
        """Another unfinished promotion or rollback (not `exclude`) moves the route to `deployment_id` in the
        environment."""
        row = self.one(
            "SELECT 1 AS x FROM operations WHERE kind IN ('promote', 'rollback') AND id != ? "
            f"AND state NOT IN ({marks(TERMINAL_STATES)}) "
            "AND json_extract(params, '$.deployment_id') = ? AND json_extract(params, '$.environment_id') = ?",
            exclude,
            *sorted(TERMINAL_STATES),
            deployment_id,
            environment_id,
        )
        return row is not None

    def operations_page(
        self,
        workspace_id: str,
        *,
        state: str | None = None,
        kind: str | None = None,
        limit: int,
        cursor: str | None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """A page of a workspace's operations (optionally one state and/or kind), in id order."""
        filters = {"workspace_id": workspace_id, "state": state, "kind": kind}
        return self._page("operations", filters, limit=limit, cursor=cursor, newest_first=newest_first)
