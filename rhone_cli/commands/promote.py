"""`rhone promote` and `rhone rollback`: move an environment's route by compare-and-swap on its epoch."""

from typing import Annotated

import typer

from rhone_cli.commands._common import invocation
from rhone_cli.commands._options import NoWaitOpt, TargetFlags, WaitTimeoutOpt, targets


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
        no_wait: NoWaitOpt = False,
        wait_timeout: WaitTimeoutOpt = None,
    ) -> None:
        """Promote a deployment's validated artifact (never rebuilt) to an environment: exit 5 if the route moved,
        6 if frozen, unapproved, or lacking migrations the environment applied (unless --allow-unsafe-db)."""
        from rhone_cli.render.routes import route_move, warn_sessions
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
        inv.out.result(doc, route_move(doc))

    @root.command("rollback")
    @targets("app")
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
        no_wait: NoWaitOpt = False,
        wait_timeout: WaitTimeoutOpt = None,
        *,
        where: TargetFlags,
    ) -> None:
        """Move the route back to an earlier owner's artifact (never rebuilt; exit 5 for a deployment that never owned
        it). Refused (exit 6) when frozen, unapproved where approval is required, or when it would cross database
        migrations, unless --allow-unsafe-db."""
        from rhone_cli.render.routes import route_move, warn_sessions
        from rhone_cli.services import routes

        inv = invocation(ctx)
        target = where.resolve(inv)
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
        inv.out.result(doc, route_move(doc))
