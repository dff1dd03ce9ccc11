"""`rhone promote` and `rhone rollback`: move an environment's route by compare-and-swap on its epoch."""

from __future__ import annotations

from typing import Annotated

import typer

from rhone_cli.commands import _tenancy as t
from rhone_cli.commands._common import invocation
from rhone_cli.output import Output


def render_route(doc: dict):
    def human(out: Output) -> None:
        if "route_key" not in doc:  # --no-wait: the operation
            out.line(f"{doc['id']}  {doc['kind']}  {doc['state']}")
            return
        label = "Production" if doc["environment"] == "production" else doc["environment"].capitalize()
        out.line(f"{label}: {doc['url']}" + ("" if doc.get("changed", True) else "  (unchanged)"))
        out.line(f"  {'route:':<10}{doc['route_key']} epoch {doc['epoch']} → {doc['deployment_id']}")
        out.line(f"  {'artifact:':<10}{doc['artifact_digest']}")
        if doc.get("previous_owner"):
            out.line(f"  {'previous:':<10}{doc['previous_owner']} {_drain_summary(doc)}")

    return human


def _drain_summary(doc: dict) -> str:
    """What happened to the previous owner's allocations when the route moved: they drain on their own (the command
    does not wait), so say that, with the connections they still hold, never that they are done."""
    draining = doc.get("draining") or []
    if not draining:
        return "(no allocation of it was running)"
    opened = sum(d.get("open_connections", 0) for d in draining)
    timeout = max(d.get("timeout", 0) for d in draining)
    return (
        f"(draining {len(draining)} allocation(s) with {opened} open connection(s); stopped when they close, "
        f"cut after {timeout:g}s; `rhone app allocations --env {doc['environment']} --all` shows how each ended)"
    )


def warn_sessions(out: Output, doc: dict) -> None:
    """Without a session store, a release restarts the sessions that live on the previous owner: say so plainly."""
    if doc.get("live_sessions") == "restart":
        env = doc["environment"]
        out.warn(
            f"{env} has no session store: sessions live on {doc['previous_owner']} restart on the new release when "
            f"their connections move (their state is lost); `rhone env services {env} --bind session` keeps them"
        )


def register(root: typer.Typer) -> None:
    @root.command("promote")
    def promote(
        ctx: typer.Context,
        deployment_id: Annotated[
            str, typer.Argument(help="The preview_ready deployment to promote.", metavar="DEPLOYMENT_ID")
        ],
        env: Annotated[str, typer.Option("--env", help="Target environment.", metavar="ENV")] = "production",
        expect_digest: Annotated[
            str | None,
            typer.Option(
                "--expect-digest", help="Refuse unless the artifact is exactly this digest.", metavar="DIGEST"
            ),
        ] = None,
        expect_epoch: Annotated[
            int | None,
            typer.Option(
                "--expect-epoch", help="Refuse unless the route is still at this epoch.", min=0, metavar="EPOCH"
            ),
        ] = None,
        approve: Annotated[bool, typer.Option("--approve", help="Approve it too (owners and admins).")] = False,
        allow_unsafe_db: Annotated[
            bool,
            typer.Option("--allow-unsafe-db", help="Promote it although it lacks migrations the environment applied."),
        ] = False,
        no_wait: t.NoWaitOpt = False,
        wait_timeout: t.WaitTimeoutOpt = None,
    ) -> None:
        """Promote a deployment's validated artifact (never rebuilt) to an environment: exit 5 if the route moved,
        6 if frozen, unapproved, or lacking migrations the environment applied (unless --allow-unsafe-db)."""
        from rhone_cli.services import routes

        inv = invocation(ctx)
        doc = routes.promote(
            inv,
            deployment_id,
            environment=env,
            expect_digest=expect_digest,
            expect_epoch=expect_epoch,
            approve=approve,
            allow_unsafe_db=allow_unsafe_db,
            no_wait=no_wait,
            timeout=wait_timeout,
        )
        warn_sessions(inv.out, doc)
        inv.out.result(doc, render_route(doc))

    @root.command("rollback")
    def rollback(
        ctx: typer.Context,
        env: Annotated[str, typer.Option("--env", help="Environment to roll back.", metavar="ENV")] = "production",
        to: Annotated[
            str | None,
            typer.Option(
                "--to", help="Deployment to return to (default: the previous owner).", metavar="DEPLOYMENT_ID"
            ),
        ] = None,
        allow_unsafe_db: Annotated[
            bool, typer.Option("--allow-unsafe-db", help="Roll back past migrations the current artifact added.")
        ] = False,
        approve: Annotated[
            bool,
            typer.Option("--approve", help="Approve it too (owners and admins; needed where approval is required)."),
        ] = False,
        expect_epoch: Annotated[
            int | None,
            typer.Option(
                "--expect-epoch", help="Refuse unless the route is still at this epoch.", min=0, metavar="EPOCH"
            ),
        ] = None,
        app_name: t.AppOpt = None,
        project: t.ProjectOpt = None,
        workspace: t.WorkspaceOpt = None,
        no_wait: t.NoWaitOpt = False,
        wait_timeout: t.WaitTimeoutOpt = None,
    ) -> None:
        """Move the route back to an earlier owner's artifact (never rebuilt; exit 5 for a deployment that never owned
        it). Refused (exit 6) when frozen, unapproved where approval is required, or when it would cross database
        migrations, unless --allow-unsafe-db."""
        from rhone_cli.services import routes, tenancy

        inv = invocation(ctx)
        target = tenancy.target(inv, workspace=workspace, project=project, app=app_name)
        doc = routes.rollback(
            inv,
            target,
            env,
            to=to,
            allow_unsafe_db=allow_unsafe_db,
            approve=approve,
            expect_epoch=expect_epoch,
            no_wait=no_wait,
            timeout=wait_timeout,
        )
        warn_sessions(inv.out, doc)
        inv.out.result(doc, render_route(doc))
