"""Provider bindings and their secrets, runtime service bindings, provisioned databases, and the variables an
allocation receives from them.

Guarantees: a binding's state moves with its operation's stage (the writes that take a `tx` commit with it); checks
that must not race (a name or a secret already bound) read in the caller's write transaction.
"""

from __future__ import annotations

from typing import Any

from rhone_local.domain.ids import new_id
from rhone_local.domain.topology import ENGINE_PROVIDERS
from rhone_local.store.core import LIVE, StoreCore, Tx, in_list, marks, now_iso

LIVE_BINDING = in_list(("binding", "ready", "unbinding"))  # a provider binding's states while it holds its name
ENGINES = in_list(ENGINE_PROVIDERS)


class BindingStore(StoreCore):
    def provider_bindings(self, environment_id: str, *, live: bool = True) -> list[dict[str, Any]]:
        """An environment's provider bindings with their region's name: the live ones, or all with `live=False`."""
        states = ("binding", "ready", "unbinding") if live else ("binding", "ready", "unbinding", "removed", "failed")
        return self.all(
            f"SELECT b.*, r.name AS region FROM provider_bindings b JOIN regions r ON r.id = b.region_id "
            f"WHERE b.environment_id = ? AND b.state IN ({marks(states)}) ORDER BY b.name, r.name",
            environment_id,
            *states,
        )

    def provider_binding(self, binding_id: str) -> dict[str, Any] | None:
        """One provider binding with its region's name; None if unknown."""
        return self.one(
            "SELECT b.*, r.name AS region FROM provider_bindings b JOIN regions r ON r.id = b.region_id WHERE b.id = ?",
            binding_id,
        )

    def bindings_of_resource(self, resource: str, *, exclude: str | None = None) -> list[dict[str, Any]]:
        """Bindings of an external resource still in use in any environment, with the environment's name: live ones,
        and removed ones whose environment still runs allocations started before the removal (they keep the
        binding's variables until they stop)."""
        return self.all(
            "SELECT b.*, e.name AS environment FROM provider_bindings b JOIN environments e ON e.id = b.environment_id "
            f"WHERE b.resource = ? AND b.id != ? AND (b.state IN {LIVE_BINDING} OR "
            "(b.state = 'removed' AND EXISTS (SELECT 1 FROM allocations a WHERE a.environment_id = b.environment_id "
            "AND a.region_id = b.region_id AND a.created_at <= b.updated_at "
            f"AND a.state IN {LIVE})))",
            resource,
            exclude or "",
        )

    def live_binding_named(self, environment_id: str, name: str, region_id: str) -> dict[str, Any] | None:
        """The binding that holds `name` in the environment's region (read in the caller's write transaction, when
        it has one: two requests binding one name are serialized there)."""
        return self.one(
            f"SELECT * FROM provider_bindings WHERE environment_id = ? AND name = ? AND region_id = ? "
            f"AND state IN {LIVE_BINDING}",
            environment_id,
            name,
            region_id,
        )

    def ready_binding_named(self, environment_id: str, name: str, region_id: str) -> dict[str, Any] | None:
        """The ready binding of that name in an environment and region; None if none."""
        return self.one(
            "SELECT * FROM provider_bindings WHERE environment_id = ? AND name = ? AND region_id = ? "
            "AND state = 'ready'",
            environment_id,
            name,
            region_id,
        )

    def secret_names_taken(self, c: Tx, environment_id: str, region_id: str, names: list[str]) -> list[dict[str, Any]]:
        """Which of `names` a live binding of the environment's region provides already (`name`, `binding`), read
        in the caller's transaction."""
        if not names:
            return []
        rows = c.execute(
            "SELECT s.name, b.name AS binding FROM binding_secrets s JOIN provider_bindings b "
            "ON b.id = s.binding_id WHERE b.environment_id = ? AND b.region_id = ? "
            f"AND b.state IN {LIVE_BINDING} AND s.name IN ({marks(names)})",
            (environment_id, region_id, *names),
        ).fetchall()
        return [dict(r) for r in rows]

    def insert_provider_binding(
        self,
        c: Tx,
        *,
        binding_id: str,
        workspace_id: str,
        app_id: str,
        environment_id: str,
        name: str,
        kind: str,
        resource: str,
        mutable: bool,
        shared_read_only: bool,
        region_id: str,
        operation_id: str,
        secrets: dict[str, str],
    ) -> None:
        """A binding in state `binding`, with its secret values, in the transaction that creates its operation."""
        ts = now_iso()
        c.execute(
            "INSERT INTO provider_bindings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'binding', ?, ?, ?)",
            (
                binding_id,
                workspace_id,
                app_id,
                environment_id,
                name,
                kind,
                resource,
                int(mutable),
                int(shared_read_only),
                region_id,
                operation_id,
                ts,
                ts,
            ),
        )
        self.add_binding_secrets(c, binding_id, secrets)

    def add_binding_secrets(self, c: Tx, binding_id: str, secrets: dict[str, str]) -> None:
        """In the caller's transaction: a binding's secret values (names are new for it)."""
        c.executemany(
            "INSERT INTO binding_secrets VALUES (?, ?, ?)",
            [(binding_id, name, value) for name, value in sorted(secrets.items())],
        )

    def finish_binding(self, c: Tx, binding_id: str) -> None:
        """binding → ready, in the transaction that records the operation `bound` (no other state is touched)."""
        c.execute(
            "UPDATE provider_bindings SET state = 'ready', updated_at = ? WHERE id = ? AND state = 'binding'",
            (now_iso(), binding_id),
        )

    def fail_binding(self, c: Tx, binding_id: str) -> None:
        """binding → failed, its secrets dropped, in the transaction that records the operation's failure."""
        c.execute(
            "UPDATE provider_bindings SET state = 'failed', updated_at = ? WHERE id = ? AND state = 'binding'",
            (now_iso(), binding_id),
        )
        c.execute("DELETE FROM binding_secrets WHERE binding_id = ?", (binding_id,))

    def start_unbinding(self, c: Tx, binding_id: str) -> bool:
        """ready → unbinding by compare-and-swap; False when it was not ready (another unbinding took it)."""
        moved = c.execute(
            "UPDATE provider_bindings SET state = 'unbinding', updated_at = ? WHERE id = ? AND state = 'ready'",
            (now_iso(), binding_id),
        ).rowcount
        return moved == 1

    def finish_unbinding(self, c: Tx, binding_id: str) -> None:
        """unbinding → removed, its secrets dropped, in the transaction that records the operation `unbound`."""
        c.execute(
            "UPDATE provider_bindings SET state = 'removed', updated_at = ? WHERE id = ? AND state = 'unbinding'",
            (now_iso(), binding_id),
        )
        c.execute("DELETE FROM binding_secrets WHERE binding_id = ?", (binding_id,))

    def replace_service_bindings(
        self,
        c: Tx,
        *,
        workspace_id: str,
        environment_id: str,
        region_id: str,
        unbind: list[str],
        bind: dict[str, tuple[str, str]],
        operation_id: str,
    ) -> None:
        """In the operation's transaction: the lane's ready bindings of `unbind` and of `bind` are removed, and each
        service of `bind` (service -> (provider, endpoint)) gets a new ready binding."""
        ts = now_iso()
        for service in [*unbind, *bind]:
            c.execute(
                "UPDATE runtime_service_bindings SET state = 'removed', updated_at = ? "
                "WHERE environment_id = ? AND region_id = ? AND service = ? AND state = 'ready'",
                (ts, environment_id, region_id, service),
            )
        for service, (provider, endpoint) in bind.items():
            c.execute(
                "INSERT INTO runtime_service_bindings VALUES (?, ?, ?, ?, ?, ?, ?, 'ready', ?, ?, ?)",
                (
                    new_id("runtime_service_binding"),
                    workspace_id,
                    environment_id,
                    region_id,
                    service,
                    provider,
                    endpoint,
                    operation_id,
                    ts,
                    ts,
                ),
            )

    def provisioned(self, environment_id: str, name: str) -> dict[str, Any] | None:
        """What was provisioned for an environment under a name (a database, a role); None if nothing."""
        return self.one("SELECT * FROM provisioned_data WHERE environment_id = ? AND name = ?", environment_id, name)

    def all_provisioned(self) -> list[dict[str, Any]]:
        """Everything provisioned, for every environment (retention and diagnostics)."""
        return self.all("SELECT * FROM provisioned_data ORDER BY environment_id, name")

    def record_provisioned(self, c: Tx, environment_id: str, name: str, plan: Any) -> None:
        """In the caller's transaction: remember a provisioned resource; a second record of one name is ignored."""
        c.execute(
            "INSERT INTO provisioned_data VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (environment_id, name) DO NOTHING",
            (environment_id, name, plan.kind, plan.location, plan.role, now_iso()),
        )

    def forget_provisioned(self, c: Tx, environment_id: str, name: str) -> None:
        """In the caller's transaction: forget a provisioned resource (after it was dropped)."""
        c.execute("DELETE FROM provisioned_data WHERE environment_id = ? AND name = ?", (environment_id, name))

    def allocations_given(self, c: Tx, binding: dict[str, Any]) -> list[str]:
        """Live allocations that received a binding's variables (started in its environment and region while it
        was ready), read in the caller's transaction."""
        rows = c.execute(
            "SELECT id FROM allocations WHERE environment_id = ? AND region_id = ? AND created_at >= ? "
            f"AND state IN {LIVE} ORDER BY id",
            (binding["environment_id"], binding["region_id"], binding["created_at"]),
        ).fetchall()
        return [r["id"] for r in rows]

    def secret_names(self, binding_id: str) -> list[str]:
        """The names (never values) of a binding's secrets, sorted."""
        return [
            r["name"]
            for r in self.all("SELECT name FROM binding_secrets WHERE binding_id = ? ORDER BY name", binding_id)
        ]

    def ready_providers(self, environment_id: str, region_id: str | None = None) -> list[str]:
        """Names of providers with a ready binding in the environment (in one region, when given)."""
        rows = self.all(
            "SELECT DISTINCT name FROM provider_bindings WHERE environment_id = ? AND state = 'ready' "
            "AND (CAST(? AS TEXT) IS NULL OR region_id = ?) ORDER BY name",
            environment_id,
            region_id,
            region_id,
        )
        return [r["name"] for r in rows]

    def service_bindings(self, environment_id: str) -> list[dict[str, Any]]:
        """An environment's ready runtime service bindings with their region's name."""
        return self.all(
            "SELECT s.*, r.name AS region FROM runtime_service_bindings s JOIN regions r ON r.id = s.region_id "
            "WHERE s.environment_id = ? AND s.state = 'ready' ORDER BY r.name, s.service",
            environment_id,
        )

    def bound_services(self, environment_id: str, region_id: str) -> list[str]:
        """The runtime services bound and ready in one environment and region."""
        rows = self.all(
            "SELECT service FROM runtime_service_bindings WHERE environment_id = ? AND region_id = ? "
            "AND state = 'ready'",
            environment_id,
            region_id,
        )
        return [r["service"] for r in rows]

    def engine_service_bindings(self, environment_id: str, region_id: str) -> list[dict[str, Any]]:
        """A lane's ready runtime services served by an engine Rhone Local runs (Redis, NATS)."""
        return self.all(
            "SELECT * FROM runtime_service_bindings WHERE environment_id = ? AND region_id = ? AND state = 'ready' "
            f"AND provider IN {ENGINES} ORDER BY service",
            environment_id,
            region_id,
        )

    def engine_lanes(self) -> list[dict[str, Any]]:
        """Every lane and engine some ready runtime service needs running."""
        return self.all(
            "SELECT DISTINCT environment_id, region_id, provider FROM runtime_service_bindings "
            f"WHERE state = 'ready' AND provider IN {ENGINES}"
        )

    def set_service_endpoint(
        self, environment_id: str, region_id: str, provider: str, endpoints: dict[str, str]
    ) -> None:
        """Record where a lane's engine listens now (it came back on another port): allocations started from now on
        receive it, and the ones before are stale for the next scale or promotion."""
        with self.write() as c:
            for service, endpoint in endpoints.items():
                c.execute(
                    "UPDATE runtime_service_bindings SET endpoint = ?, updated_at = ? WHERE environment_id = ? "
                    "AND region_id = ? AND provider = ? AND service = ? AND state = 'ready' AND endpoint != ?",
                    (endpoint, now_iso(), environment_id, region_id, provider, service, endpoint),
                )

    def allocation_environment(self, environment_id: str, region_id: str) -> dict[str, str]:
        """What an allocation receives from its environment in its region: its settings, each ready provider
        binding's resource and secrets (which win over a setting of the same name), and each runtime service's
        endpoint. Read at start, never logged."""
        variables = {s["name"]: s["value"] for s in self.settings(environment_id)}
        for binding in self.all(
            "SELECT * FROM provider_bindings WHERE environment_id = ? AND region_id = ? AND state = 'ready' "
            "ORDER BY name",
            environment_id,
            region_id,
        ):
            prefix = "RHONE_PROVIDER_" + binding["name"].upper().replace("-", "_")
            variables[prefix + "_KIND"] = binding["kind"]
            variables[prefix + "_RESOURCE"] = binding["resource"]
            for secret in self.all("SELECT name, value FROM binding_secrets WHERE binding_id = ?", binding["id"]):
                variables[secret["name"]] = secret["value"]
        for service in self.all(
            "SELECT service, endpoint FROM runtime_service_bindings WHERE environment_id = ? AND region_id = ? "
            "AND state = 'ready'",
            environment_id,
            region_id,
        ):
            variables["RHONE_SERVICE_" + service["service"].upper() + "_URL"] = service["endpoint"]
        return variables

    def provided_names(self, environment_id: str) -> set[str]:
        """Variables the environment provides its allocations: its settings and its live bindings' secrets."""
        rows = self.all(
            "SELECT name FROM environment_settings WHERE environment_id = ? UNION "
            "SELECT s.name FROM binding_secrets s JOIN provider_bindings b ON b.id = s.binding_id "
            f"WHERE b.environment_id = ? AND b.state IN {LIVE_BINDING}",
            environment_id,
            environment_id,
        )
        return {r["name"] for r in rows}
