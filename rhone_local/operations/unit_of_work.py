"""The unit of work of every mutation, free of HTTP: the idempotency check, the mutation itself (which records its
operation, when it starts one), its audit record and its idempotent response, in ONE write transaction. The API
builds a `Mutation` from the request and renders the `Done` it gets back.

Guarantees: a repeated idempotency key from the same caller replays the stored answer; the same key with a
different request is refused (409 `idempotency_key_reused`). Both checks run inside the write transaction, so ten
concurrent copies of a request still create one resource. A refusal (a `DomainError`) writes nothing but its audit
record (`failed`, with its code).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rhone_local.domain.access import Principal
from rhone_local.domain.canonical import canonical_sha256
from rhone_local.domain.errors import DomainError, conflict
from rhone_local.domain.nodes import LAPSE_SECONDS
from rhone_local.store import Store, Tx


def body_hash(payload: Any) -> str:
    """The fingerprint an idempotency key is bound to: the sha256 of the request's canonical JSON, the same bytes a
    manifest's digest is taken over."""
    return canonical_sha256(payload)


@dataclass(frozen=True)
class Mutation:
    """Who asks for what: everything the unit of work records."""

    principal: Principal
    workspace_id: str | None
    action: str  # the audit action, e.g. `deployment.promote`
    target: str
    request_id: str
    method: str
    path: str
    payload: Any
    idempotency_key: str | None = None
    secret_response: bool = False  # the answer carries a secret shown once: never stored, never replayed


@dataclass(frozen=True)
class Origin:
    """Who started an operation, and through which request (recorded on the operation)."""

    principal: Principal
    request_id: str
    idempotency_key: str | None


def start_operation(
    store: Store,
    c: Tx,
    origin: Origin,
    *,
    workspace_id: str,
    kind: str,
    target_kind: str,
    target_id: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Record a new operation of `kind` in the unit of work's transaction; the workers pick it up once it commits."""
    _require_a_live_worker(store)
    return store.create_operation(
        c,
        workspace_id=workspace_id,
        kind=kind,
        target_kind=target_kind,
        target_id=target_id,
        params=params,
        principal=origin.principal,
        request_id=origin.request_id,
        idempotency_key=origin.idempotency_key,
    )


def _require_a_live_worker(store: Store) -> None:
    """Only workers advance operations: in a cluster (nodes registered) with no live node of the worker role, e.g.
    an `api,edge` node whose worker nodes are stopped, an operation would wait in its first state forever. Refused
    instead, naming what to start (docs/multi-node.md, "Nodes"). A control plane that never joined a cluster has no
    node rows and runs its own workers."""
    nodes = store.nodes(LAPSE_SECONDS)
    if nodes and not any(node["live"] and "worker" in node["roles"] for node in nodes):
        raise conflict(
            "no_live_worker",
            "no live node of this cluster has the worker role: nothing would advance this operation",
            hint="start a node with the worker role on this store (`rhone local up --node NAME --role worker,runner`, "
            "with the same --store), then retry",
        )


@dataclass(frozen=True)
class Done:
    status: int
    body: dict[str, Any]
    replayed: bool = False


def run_mutation(store: Store, mutation: Mutation, perform: Callable[[Tx], tuple[int, dict[str, Any]]]) -> Done:
    """Run `perform` (the mutation's writes, in the caller-provided transaction) as one unit of work."""
    key = mutation.idempotency_key
    fingerprint = body_hash({"method": mutation.method, "path": mutation.path, "body": mutation.payload})
    try:
        with store.write() as c:
            if key:
                prior = store.idempotent_response(c, mutation.principal.id, key)
                if prior is not None:
                    return _replay(mutation, prior, fingerprint)
            status, body = perform(c)
            _audit(store, mutation, "allowed", tx=c)
            if key:
                store.remember_response(
                    c,
                    principal_id=mutation.principal.id,
                    key=key,
                    method=mutation.method,
                    path=mutation.path,
                    body_hash=fingerprint,
                    status=status,
                    response=_without_secrets(body) if mutation.secret_response else body,
                )
    except DomainError as error:
        _audit(store, mutation, "failed", detail={"code": error.code})
        raise
    return Done(status, body)


def _audit(store: Store, mutation: Mutation, result: str, *, tx: Tx | None = None, detail: dict | None = None) -> None:
    store.audit(
        workspace_id=mutation.workspace_id,
        principal=mutation.principal,
        action=mutation.action,
        target=mutation.target,
        request_id=mutation.request_id,
        result=result,
        detail=detail,
        tx=tx,
    )


def _replay(mutation: Mutation, prior: dict[str, Any], fingerprint: str) -> Done:
    if prior["body_hash"] != fingerprint:
        raise conflict(
            "idempotency_key_reused", "this Idempotency-Key was used for a different request", first_path=prior["path"]
        )
    if mutation.secret_response:
        # The first answer carried a secret shown once and never stored; a replay cannot repeat it.
        raise conflict(
            "secret_shown_once",
            "this request already succeeded and its secret was shown once; create a new one instead",
            first=prior["response"],
        )
    return Done(prior["status"], prior["response"], replayed=True)


def _without_secrets(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: _without_secrets(v) for k, v in body.items() if k != "secret"}
    return body
