"""`rhone help TOPIC`: reference pages that scripts and people need (exit codes, environment variables)."""

import typer

from rhone_cli.commands._common import group, invocation
from rhone_cli.errors import EXIT_CODE_MEANINGS

app = group("help", "Reference topics (exit-codes, environment); `rhone help COMMAND` is `rhone COMMAND --help`.")

ENVIRONMENT_VARIABLES = {
    "RHONE_TOKEN": "API token; wins over stored credentials (use it in CI).",
    "RHONE_API_URL": "API base URL (like --api-url).",
    "RHONE_PROFILE": "Profile to use (like --profile).",
    "RHONE_REQUEST_TIMEOUT": "Seconds per HTTP request (like --request-timeout; default 30).",
    "RHONE_PROGRESS": "auto, plain, jsonl or none (like --progress).",
    "RHONE_NO_INPUT": "Never prompt (like --no-input).",
    "RHONE_CONFIG_DIR": "Directory for config.toml and credentials.toml (default: the platform config dir).",
    "RHONE_IDEMPOTENCY_KEY": "Idempotency-Key for the next mutating command (default: fresh, or derived in CI).",
    "RHONE_LOCAL_DATA_DIR": "Rhone Local's data directory (like `rhone local up --data-dir`).",
    "RHONE_LOCAL_APP_DATABASES": "A PostgreSQL server for app databases (like `rhone local up --app-databases`).",
    "RHONE_LOCAL_BLOBS": "An S3 bucket for Rhone Local's blobs (like `rhone local up --blobs`).",
    "RHONE_LOCAL_BLOBS_ENDPOINT": "The S3 API endpoint for RHONE_LOCAL_BLOBS (like `rhone local up --blobs-endpoint`).",
    "RHONE_LOCAL_EVENTS": "A NATS JetStream server for route events (like `rhone local up --events`).",
    "RHONE_LOCAL_STORE": "A PostgreSQL database for Rhone Local's control store (like `rhone local up --store`).",
    "RHONE_CA_BUNDLE": "PEM file of CA certificates to trust besides the system's (like --ca-bundle).",
    "REQUESTS_CA_BUNDLE": "Like RHONE_CA_BUNDLE, when that is not set (as requests reads it).",
    "CURL_CA_BUNDLE": "Like RHONE_CA_BUNDLE, when neither of the above is set (as curl reads it).",
    "SSL_CERT_FILE": "Like RHONE_CA_BUNDLE, when none of the above is set (as OpenSSL reads it).",
    "SSL_CERT_DIR": "A directory of CA certificates (OpenSSL's hashed layout) to trust besides the system's.",
    "HTTPS_PROXY": "Proxy for https API URLs (also https_proxy): http://, https://, socks5:// or socks5h://.",
    "HTTP_PROXY": "Proxy for http API URLs (also http_proxy). Loopback and *.localhost never use a proxy.",
    "ALL_PROXY": "Proxy when the scheme's own variable is not set (also all_proxy); SOCKS needs rhone[socks].",
    "NO_PROXY": "Hosts reached directly (also no_proxy): *, domains (with subdomains), IPs, CIDRs, each [:port].",
    "RHONE_COMPLETION_TIMEOUT": "Seconds a TAB waits for the API when completing ids and names (default 0.5).",
    "RHONE_CACHE_DIR": "Where completion caches API answers (default: $XDG_CACHE_HOME/rhone or ~/.cache/rhone).",
    "XDG_CACHE_HOME": "Base of the default cache directory on Linux.",
    "CI": "When set, rhone never prompts and never uses the OS keyring.",
    "GITHUB_RUN_ID": "In CI, with CI_PIPELINE_ID, BUILDKITE_BUILD_ID, CIRCLE_WORKFLOW_ID or BUILD_ID: derives "
    "idempotency keys, so a re-run job attaches to its first attempt.",
    "NO_COLOR": "Disable colors (also --no-color, TERM=dumb).",
    "TERM": "dumb: no colors and no animated progress.",
    "XDG_CONFIG_HOME": "Base of the default config directory on Linux ($XDG_CONFIG_HOME/rhone; APPDATA on Windows).",
    "XDG_DATA_HOME": "Base of Rhone Local's default data directory on Linux ($XDG_DATA_HOME/rhone/local).",
    "APPDATA": "Base of the default config directory on Windows.",
    "HOME": "The home directory the default config, cache and data directories are under.",
}


@app.command("exit-codes")
def exit_codes(ctx: typer.Context) -> None:
    """The exit codes rhone uses, and what each means."""
    inv = invocation(ctx)
    rows = [
        {"code": int(code), "name": code.name.lower(), "meaning": text} for code, text in EXIT_CODE_MEANINGS.items()
    ]
    inv.out.result(
        {"exit_codes": rows},
        lambda out: out.table(["code", "name", "meaning"], [(r["code"], r["name"], r["meaning"]) for r in rows]),
    )


@app.command("environment")
def environment(ctx: typer.Context) -> None:
    """The environment variables rhone reads."""
    inv = invocation(ctx)
    rows = [{"name": k, "meaning": v} for k, v in ENVIRONMENT_VARIABLES.items()]
    inv.out.result(
        {"environment": rows}, lambda out: out.table(["name", "meaning"], [(r["name"], r["meaning"]) for r in rows])
    )
