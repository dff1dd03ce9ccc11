"""`rhone api [METHOD] PATH`: an authenticated request to any /v1 path, printed as JSON."""

from typing import Annotated

import typer

from rhone_cli.api import V1
from rhone_cli.commands._common import invocation


def register(root: typer.Typer) -> None:
    @root.command("api")
    def api(
        ctx: typer.Context,
        method_or_path: Annotated[str, typer.Argument(help="GET, POST, PUT, PATCH or DELETE; or the path.")],
        path: Annotated[
            str | None, typer.Argument(help=f"{V1}/… path, with an optional ?query (when a method comes first).")
        ] = None,
        field: Annotated[
            list[str] | None,
            typer.Option(
                "--field",
                "-f",
                help="key=value, a string: query parameter (GET) or JSON body field.",
                metavar="KEY=VALUE",
            ),
        ] = None,
        typed_field: Annotated[
            list[str] | None,
            typer.Option(
                "--typed-field",
                "-F",
                help="key=value with true/false/null/numbers as JSON, @FILE or @- for text.",
                metavar="KEY=VALUE",
            ),
        ] = None,
        input_file: Annotated[
            str | None, typer.Option("--input", help="The JSON request body, from FILE or - (stdin).", metavar="FILE")
        ] = None,
        paginate: Annotated[
            bool, typer.Option("--paginate", help="Follow next_cursor and print every item of a GET list.")
        ] = False,
    ) -> None:
        """Send an authenticated request to a /v1 path and print the JSON answer (without METHOD: GET, or POST when
        fields or --input are given and --paginate is not). Exit codes as for every command; --jq filters it."""
        import json

        from rhone_cli.services import api as service

        inv = invocation(ctx)
        values = service.fields(field or [], typed_field or [], inv)
        body = service.body_from(input_file, inv)
        has_body = not paginate and (bool(values) or body is not None)
        method, target = service.split_target(method_or_path, path, has_body=has_body)
        data = service.request(inv, method, target, values, body, paginate=paginate)
        if data is None:
            return
        inv.out.result(data, lambda out: out.line(json.dumps(data, indent=2)))
