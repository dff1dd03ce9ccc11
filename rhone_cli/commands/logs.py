"""`rhone logs`: what an app's allocations wrote, prefixed by allocation; `-f` follows until Ctrl-C."""

import signal
from typing import Annotated

import typer

from rhone_cli.commands._common import invocation
from rhone_cli.commands._options import TargetFlags, targets
from rhone_cli.errors import Interrupted


def register(root: typer.Typer) -> None:
    @root.command("logs")
    @targets("app")
    def logs(
        ctx: typer.Context,
        deployment: Annotated[
            str | None,
            typer.Argument(help="Only this deployment's allocations (all of them, ended ones too).", metavar="DEP"),
        ] = None,
        env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.", metavar="ENV")] = None,
        follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new output until Ctrl-C.")] = False,
        since: Annotated[
            str | None,
            typer.Option("--since", help="Only output of the last DURATION (30s, 10m, 2h, 1d).", metavar="DURATION"),
        ] = None,
        *,
        where: TargetFlags,
    ) -> None:
        """App output (stdout and stderr) of every allocation, each line prefixed by its allocation id. With DEP:
        everything its allocations wrote; without: the recent output of the app's live allocations and of those
        that ended in the last hour (or within --since). Developers and above."""
        from rhone_cli.errors import usage_error
        from rhone_cli.services import logs as service

        inv = invocation(ctx)
        if follow and inv.env.options.json:
            raise usage_error("--follow prints lines as they come; it cannot be combined with --json")
        seconds = service.parse_duration(since) if since is not None else None
        target = where.resolve(inv)
        pages = service.pages(inv, target, deployment=deployment, environment=env, since=seconds, follow=follow)
        if inv.env.options.json:
            collected: dict = {"lines": []}
            for page in pages:  # every page until nothing more is there: one document
                collected = {**page, "lines": collected["lines"] + page["lines"]}
            inv.out.result(collected)
            return
        show = service.render(inv.out.line)
        try:
            for page in pages:
                show(page)
        except Interrupted as interrupted:
            if not follow or interrupted.signum != signal.SIGINT:
                raise
            # Ctrl-C is how a follow ends: nothing was left unfinished, so it is a success.
