"""`rhone deploy`: manifest → upload what the server lacks → create the deployment → wait for its verdict.

The deployment's Idempotency-Key is derived from the manifest digest, the target and the CI run id when there is
one, so a re-run of the same CI job attaches to the deployment it already created instead of making another.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rhone_cli import outcomes
from rhone_cli.errors import ExitCode, RhoneError
from rhone_cli.invocation import Invocation
from rhone_cli.output import human_size
from rhone_cli.services import operations, tenancy

DIGESTS_PER_QUERY = 5000
UPLOAD_CONCURRENCY = 4
UPLOAD_CHUNK = 1024 * 1024


def source_facts(directory: Path) -> dict[str, Any]:
    """The git commit and whether the tree is dirty, when the project is a git checkout (else nulls)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return {"git_commit": None, "git_dirty": None}
        status = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain"], capture_output=True, text=True, timeout=10
        )
        return {"git_commit": commit.stdout.strip(), "git_dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"git_commit": None, "git_dirty": None}


def upload_missing(inv: Invocation, manifest: Any, root: Path) -> dict[str, int]:
    """Ask which blobs the server lacks and upload exactly those (bounded concurrency, each PUT retried)."""
    api = inv.api()
    by_digest: dict[str, dict] = {}
    for entry in manifest.files:
        by_digest.setdefault("sha256:" + entry["sha256"], entry)
    digests = list(by_digest)
    missing: list[str] = []
    for start in range(0, len(digests), DIGESTS_PER_QUERY):
        chunk = digests[start : start + DIGESTS_PER_QUERY]
        missing.extend(api.missing_blobs(chunk))
    total = sum(by_digest[d]["size"] for d in missing)
    inv.out.progress_event(
        "upload",
        message=f"uploading {len(missing)} of {len(digests)} blobs ({human_size(total)})",
        blobs=len(missing),
        bytes=total,
        known=len(digests) - len(missing),
    )

    def put(digest: str) -> None:
        entry = by_digest[digest]
        api.upload_blob(digest, lambda: counted(hashed_bytes(root, entry)), entry["size"])

    def counted(chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            advance(len(chunk))
            yield chunk

    if missing:
        from rhone_cli import progress

        pool = ThreadPoolExecutor(max_workers=UPLOAD_CONCURRENCY)
        try:
            with progress.transfer(inv.out, total, "uploading") as advance:
                for _ in pool.map(put, missing):
                    pass
        finally:
            # On a failure or Ctrl-C, queued uploads are dropped instead of sent before rhone can exit.
            pool.shutdown(wait=True, cancel_futures=True)
    return {"blobs_total": len(digests), "blobs_uploaded": len(missing), "bytes_uploaded": total}


def hashed_bytes(root: Path, entry: dict[str, Any]) -> Iterator[bytes]:
    """A manifest entry's file, read again for its upload and hashed on the way: exactly the `size` bytes whose
    sha256 the manifest holds, or `source_changed` before the last of them is sent (the request is then cut short,
    so the server never stores it). A file that grew since it was hashed still uploads its first `size` bytes when
    they are the bytes that were hashed."""
    path = root.joinpath(*entry["path"].split("/"))
    digest = hashlib.sha256()
    remaining = entry["size"]
    try:
        with open(path, "rb") as handle:
            while remaining:
                chunk = handle.read(min(UPLOAD_CHUNK, remaining))
                if not chunk:
                    raise source_changed(entry["path"], "it is shorter than when it was hashed")
                digest.update(chunk)
                remaining -= len(chunk)
                if not remaining and digest.hexdigest() != entry["sha256"]:
                    raise source_changed(entry["path"], "its content changed after it was hashed")
                yield chunk
    except OSError as error:
        raise source_changed(entry["path"], f"it can no longer be read ({error.strerror or error})") from None


def source_changed(path: str, why: str) -> RhoneError:
    """A file changed between the manifest and its upload. Exit 5, like a lost compare-and-swap: the command was
    right, the tree moved under it; deploying again once the file is quiet (or excluded) succeeds."""
    return RhoneError(
        f"{path} changed during the deploy: {why}; nothing was deployed",
        code="source_changed",
        exit_code=ExitCode.CONFLICT,
        retryable=True,
        hint=f"if {path} is written while rhone runs (a log, a build product, or this command's own output "
        "redirected into the project, like `> result.json 2>> ci.log`), add it to .rhoneignore; otherwise deploy "
        "again",
        details={"path": path},
    )


def deploy(
    inv: Invocation,
    *,
    environment: str,
    prebuilt: bool,
    no_wait: bool,
    timeout: float | None,
    force_build: bool = False,
) -> dict:
    from rhone_cli.config import project
    from rhone_cli.services.artifacts import project_manifest

    config_path = project.locate(inv.env.workdir)
    config = project.load(config_path.parent, config_path)
    project_dir = config_path.parent
    manifest = project_manifest(project_dir, prebuilt=prebuilt, out=inv.out)
    root = Path(manifest.root)
    inv.out.progress_event(
        "phase",
        phase="manifest",
        message=f"manifest {manifest.digest} ({manifest.file_count} files, "
        f"{human_size(manifest.total_size)}, {manifest.hashed_count} hashed)",
        digest=manifest.digest,
        files=manifest.file_count,
        bytes=manifest.total_size,
    )
    target = tenancy.target(inv, workspace=config.project.workspace, project=config.project.name, app=config.app.name)
    # The app must exist before its first deployment: create the project and app named in rhone.toml when
    # missing (what `rhone init --link` does), so `rhone deploy` alone works in a fresh checkout.
    linked = tenancy.link(inv, config, project_dir)
    if linked["created"]:
        inv.out.info(f"created {' and '.join(linked['created'])} for {config.project.name}/{config.app.name}")
    uploaded = upload_missing(inv, manifest, root)
    body = {
        "environment": environment,
        "manifest": manifest.document,
        "manifest_digest": manifest.digest,
        "prebuilt": prebuilt,
        "artifact_digest": manifest.digest if prebuilt else None,
        "config": config.resolved(),
        "source": source_facts(project_dir),
        "force_build": force_build,
    }
    op = inv.api().create_deployment(target, body)
    operations.announce(inv, op)
    if no_wait:
        warn_policy_drift(inv, inv.api().deployment(op["target_id"]))
        return {"operation": op, "upload": uploaded}
    op = operations.wait(inv, op, timeout=timeout)
    return {**result(inv, op), "upload": uploaded}


def result(inv: Invocation, op: dict[str, Any]) -> dict[str, Any]:
    """The deployment a finished deploy operation made, or the error that explains why it did not reach
    preview_ready — the same for `rhone deploy` and for `rhone op wait` resuming it."""
    deployment = inv.api().deployment(op["target_id"])
    warn_policy_drift(inv, deployment)
    failure = operations.verdict(op)
    if failure is None:
        return deployment
    blocked = outcomes.outcome(op) == outcomes.BLOCKED
    if blocked and failure.code == "binding_missing":
        # The server refuses to approve a missing binding away: do not suggest it.
        failure.hint = "bind the missing provider(s) in this environment (`rhone env bind`), then deploy again"
    elif blocked:
        failure.hint = f"after review: `rhone deploy approve {deployment['id']}`" + (
            " --ack-cold" if failure.code == "cold_deploy_needs_approval" else ""
        )
    else:  # the build's and the preview's own output are in the logs; the operation holds the stages
        failure.hint = f"logs: `rhone deploy logs {deployment['id']}`; stages: `rhone op show {op['id']}`"
    failure.details = {"deployment_id": deployment["id"], "evidence": deployment["evidence"]}
    raise failure


def warn_policy_drift(inv: Invocation, deployment: dict) -> None:
    """One warning per environment whose policy on the server differs from what this rhone.toml declares (the
    server's applies); the deployment's `policy_drift` carries the same in --json."""
    for drift in deployment.get("policy_drift") or []:
        inv.out.warn(tenancy.policy_drift_message(drift))


def approve(inv: Invocation, deployment_id: str, *, ack_cold: bool, timeout: float | None) -> dict:
    api = inv.api()
    operations.follow(inv, api.approve(deployment_id, ack_cold=ack_cold), no_wait=False, timeout=timeout)
    return api.deployment(deployment_id)
