"""`rhone login`, `rhone logout`, `rhone whoami`: credentials for a profile."""

from typing import Annotated, Any

import typer

from rhone_cli.commands._common import group, invocation
from rhone_cli.errors import input_required
from rhone_cli.output import Output

SOURCES = {
    "flag": "--token flag",
    "env": "RHONE_TOKEN environment variable",
    "keyring": "OS keyring",
    "file": "credentials file",
}


def _render_status(doc: dict[str, Any]) -> Any:
    def human(out: Output) -> None:
        identity = doc.get("identity") or {}
        who = identity.get("name") or identity.get("id") or "(not checked)"
        kind = identity.get("kind")
        out.line(f"Logged in to {doc['api_url']} as {who}" + (f" ({kind})" if kind else ""))
        out.line(f"  profile:    {doc['profile']}")
        if doc.get("workspace"):
            out.line(f"  workspace:  {doc['workspace']}")
        if doc.get("expires_at"):
            out.line(f"  expires:    {doc['expires_at']} (refreshed automatically)")
        source = doc.get("credential_source") or doc.get("credential_store")
        where = SOURCES.get(source, source)
        if doc.get("credentials_file"):
            where += f" ({doc['credentials_file']})"
        out.line(f"  token from: {where}")
        for workspace in identity.get("workspaces") or []:
            out.line(f"  member of:  {workspace.get('name')} ({workspace.get('role')})")

    return human


def register(root: typer.Typer) -> None:
    @root.command("login")
    def login(
        ctx: typer.Context,
        with_token: Annotated[bool, typer.Option("--with-token", help="Read the token from stdin.")] = False,
        insecure_storage: Annotated[
            bool,
            typer.Option("--insecure-storage", help="Store the token in the 0600 credentials file, not the keyring."),
        ] = False,
        no_verify: Annotated[
            bool, typer.Option("--no-verify", help="Store the token without checking it against the API.")
        ] = False,
        status: Annotated[bool, typer.Option("--status", help="Show the current login instead (like whoami).")] = False,
        device: Annotated[
            bool, typer.Option("--device", help="Log in by approving a code in a browser (the default in a terminal).")
        ] = False,
        no_browser: Annotated[
            bool, typer.Option("--no-browser", help="With the device login, do not open a browser; print the address.")
        ] = False,
    ) -> None:
        """Log in to a Rhone API. In a terminal: a code to approve in a browser (`rhone login --api-url URL`); in
        scripts: `rhone login --api-url URL --with-token < token.txt`."""
        from rhone_cli.services import auth

        inv = invocation(ctx)
        if status:
            doc = auth.status(inv)
            inv.out.result(doc, _render_status(doc))
            return
        if device or (not (with_token or inv.env.options.token) and inv.env.can_prompt):
            doc = auth.device_login(inv, insecure_storage=insecure_storage, open_browser=not no_browser)
            inv.out.result(doc, _render_status(doc))
            return
        if with_token and inv.env.stdin_isatty:
            import getpass

            token = getpass.getpass("Paste your Rhone API token: ", stream=inv.env.stderr)
        elif with_token:
            token = inv.env.stdin.read()
        elif inv.env.options.token:
            token = inv.env.options.token
        else:
            raise input_required("--with-token (or --device)", "a token")
        doc = auth.login(inv, token, verify=not no_verify, insecure_storage=insecure_storage)
        inv.out.result(doc, _render_status(doc))

    @root.command("logout")
    def logout(ctx: typer.Context) -> None:
        """Remove the stored token of the profile (keyring and credentials file)."""
        from rhone_cli.services import auth

        inv = invocation(ctx)
        doc = auth.logout(inv)

        def human(out: Output) -> None:
            if doc["removed_from"]:
                out.line(
                    f"Logged out of profile {doc['profile']} (token removed from {', '.join(doc['removed_from'])})"
                )
            else:
                out.line(f"No stored token for profile {doc['profile']}; nothing to remove")

        inv.out.result(doc, human)
        if inv.env.environ.get("RHONE_TOKEN"):
            inv.out.warn("RHONE_TOKEN is set in the environment and still provides a token")

    @root.command("whoami")
    def whoami(ctx: typer.Context) -> None:
        """Show the profile, API URL, identity and where the token comes from."""
        from rhone_cli.services import auth

        inv = invocation(ctx)
        doc = auth.status(inv)
        inv.out.result(doc, _render_status(doc))


auth_app = group("auth", "Credentials for scripts: the token commands would send.")


@auth_app.command("token")
def token(ctx: typer.Context) -> None:
    """Print the token of the current profile (refreshed first if it was about to expire), for scripts:
    `curl -H "Authorization: Bearer $(rhone auth token)" …`. It is printed unmasked: keep it out of logs."""
    import json

    from rhone_cli.token_refresh import fresh_credential

    inv = invocation(ctx)
    credential = fresh_credential(inv, inv.credential())
    if inv.env.options.json:
        document = {"token": credential.token, "source": credential.source, "expires_at": credential.expires_at}
        # Written directly: the output module masks known secrets everywhere, and printing this one is the point.
        inv.env.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    inv.env.stdout.write(f"{credential.token}\n")
