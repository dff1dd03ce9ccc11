"""Deploy (kind `deploy`): queued → cloning → building → validating → preview_ready; `blocked` parks a deploy whose
environment needs an approval (an approval resumes validating); any stage may end it `failed`. The stages run in
the deploy pipeline, injected at wiring (server.py); each outcome is recorded on the operation and on the
deployment in one transaction. `cloning` and `building` are claimed by the build pool (workers.py)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, Protocol

from rhone_local.operations.kinds import Advance, Kind
from rhone_local.store import Store, Tx

KIND = "deploy"


class Outcome(Protocol):
    state: str
    evidence: dict[str, Any]
    error: dict[str, Any] | None
    deployment: dict[str, Any]  # columns to update on the deployment


class DeployStages(Protocol):
    """The deploy pipeline's stages (rhone_local/pipeline.py)."""

    def outcome(self, deployment: dict[str, Any], stage: Callable[[], Any]) -> Outcome: ...

    def clone(self, deployment: dict[str, Any]) -> Outcome: ...

    def build(self, deployment: dict[str, Any], *, force: bool = False) -> Outcome: ...

    def validate(self, deployment: dict[str, Any]) -> Outcome: ...


def kinds(store: Store, pipeline: DeployStages) -> dict[str, Kind]:
    def stage(run: Callable[[dict[str, Any], dict[str, Any]], Outcome]) -> Callable[[dict[str, Any]], Advance]:
        def handler(op: dict[str, Any]) -> Advance:
            deployment = store.deployment(op["target_id"])
            outcome = pipeline.outcome(deployment, lambda: run(op, deployment))

            def effect(c: Tx) -> None:
                store.update_deployment(c, deployment["id"], state=outcome.state, **outcome.deployment)

            return Advance(outcome.state, outcome.evidence, outcome.error, effect)

        return handler

    def queued(op: dict[str, Any], deployment: dict[str, Any]) -> Outcome:
        return SimpleNamespace(state="cloning", evidence={}, error=None, deployment={})  # nothing to do but move on

    def building(op: dict[str, Any], deployment: dict[str, Any]) -> Outcome:
        return pipeline.build(deployment, force=bool(op["params"].get("force_build")))

    handlers = {
        "queued": stage(queued),
        "cloning": stage(lambda op, deployment: pipeline.clone(deployment)),
        "building": stage(building),
        "validating": stage(lambda op, deployment: pipeline.validate(deployment)),
    }
    return {KIND: Kind(KIND, handlers)}
