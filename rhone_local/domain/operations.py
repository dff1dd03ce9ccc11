"""Operation kinds and their state machines.

An operation advances one durable stage at a time: the worker reads the current state, performs that stage's
effect, and records the next state with a compare-and-swap on the operation's version. This module says which
transitions exist; it never touches storage.

Tenancy operations (project/app/environment create) use: queued → validating → applying → succeeded, or failed.
"""

from __future__ import annotations

from dataclasses import dataclass

TERMINAL_STATES = frozenset(
    {
        "succeeded",
        "failed",
        "preview_ready",
        "healthy",
        "rolled_back",
        "bound",
        "unbound",
        "scaled",
        "eligible",
        "disabled",
    }
)
# Parked: not terminal, but no worker may advance it until a person acts (an approval moves it back).
PARKED_STATES = frozenset({"blocked"})
NOT_RUNNABLE = TERMINAL_STATES | PARKED_STATES


@dataclass(frozen=True)
class Machine:
    states: tuple[str, ...]
    happy_path: tuple[str, ...]
    terminal: frozenset[str]
    # parked state -> (the state it is entered from, the state an approval resumes)
    parked: dict[str, tuple[str, str]] | None = None
    failure: str = "failed"  # the state any non-terminal state may fail to

    @property
    def success(self) -> str:
        """The one terminal state that means the operation did what it was asked (the end of the happy path)."""
        return self.happy_path[-1]

    def next_state(self, state: str) -> str | None:
        """The next state on the happy path, or None when `state` is terminal."""
        if state in self.terminal:
            return None
        index = self.happy_path.index(state)
        return self.happy_path[index + 1]

    def allowed(self, current: str, new: str) -> bool:
        """A move forward along the happy path, or to a failure state from any non-terminal state."""
        if current in self.terminal:
            return False
        if new == self.failure:
            return True
        for parked, (entered_from, resumes_to) in (self.parked or {}).items():
            if (current, new) in ((entered_from, parked), (parked, resumes_to)):
                return True
        if current not in self.happy_path:
            return False
        return new in self.happy_path and self.happy_path.index(new) == self.happy_path.index(current) + 1


TENANCY = Machine(
    states=("queued", "validating", "applying", "succeeded", "failed"),
    happy_path=("queued", "validating", "applying", "succeeded"),
    terminal=frozenset({"succeeded", "failed"}),
)

# The Deploy Pipeline (domain.md §2.1). `blocked` waits for `rhone deploy approve`, which resumes validation.
DEPLOY = Machine(
    states=("queued", "cloning", "building", "validating", "preview_ready", "blocked", "failed"),
    happy_path=("queued", "cloning", "building", "validating", "preview_ready"),
    terminal=frozenset({"preview_ready", "failed"}),
    parked={"blocked": ("validating", "validating")},
)

# Production Promotion (domain.md §2.2); a rollback runs the same stages and ends rolled_back.
PROMOTE = Machine(
    states=("requested", "policy_check", "route_cas", "edge_propagating", "healthy", "failed"),
    happy_path=("requested", "policy_check", "route_cas", "edge_propagating", "healthy"),
    terminal=frozenset({"healthy", "failed"}),
)
ROLLBACK = Machine(
    states=("requested", "policy_check", "route_cas", "edge_propagating", "rolled_back", "failed"),
    happy_path=("requested", "policy_check", "route_cas", "edge_propagating", "rolled_back"),
    terminal=frozenset({"rolled_back", "failed"}),
)

# Provider and runtime-service bindings: created (or removed) in one durable stage.
BIND = Machine(
    states=("requested", "binding", "bound", "failed"),
    happy_path=("requested", "binding", "bound"),
    terminal=frozenset({"bound", "failed"}),
)
UNBIND = Machine(
    states=("requested", "unbinding", "unbound", "failed"),
    happy_path=("requested", "unbinding", "unbound"),
    terminal=frozenset({"unbound", "failed"}),
)
# Scale: the runtime-services gate, then the runner converges on the instance count.
SCALE = Machine(
    states=("requested", "gate_check", "scaling", "scaled", "failed"),
    happy_path=("requested", "gate_check", "scaling", "scaled"),
    terminal=frozenset({"scaled", "failed"}),
)
# Region Enablement (domain.md §2.6): a gate that does not hold ends it `disabled`, naming the gate.
REGION_ENABLE = Machine(
    states=("requested", "provisioning", "binding_services", "replicating_artifacts", "eligible", "disabled"),
    happy_path=("requested", "provisioning", "binding_services", "replicating_artifacts", "eligible"),
    terminal=frozenset({"eligible", "disabled"}),
    failure="disabled",
)

# A change of an environment's settings: recorded with the request, then its running allocations roll onto it (new
# instances first; the old ones stop once the new ones are ready).
CONFIG_UPDATE = Machine(
    states=("requested", "rolling", "succeeded", "failed"),
    happy_path=("requested", "rolling", "succeeded"),
    terminal=frozenset({"succeeded", "failed"}),
)

MACHINES: dict[str, Machine] = {
    "deploy": DEPLOY,
    "promote": PROMOTE,
    "rollback": ROLLBACK,
    "project.create": TENANCY,
    "app.create": TENANCY,
    "environment.create": TENANCY,
    "binding.create": BIND,
    "binding.remove": UNBIND,
    "services.update": BIND,
    "scale": SCALE,
    "region.enable": REGION_ENABLE,
    "config.update": CONFIG_UPDATE,
}
