"""What retention keeps, in process: route owners and the deployment each route rolls back to whatever their age,
route owners within the history window, the last N deployments per app, the newest preview, and deployments in
progress; and a run removes the work folders of everything else (files only: rows stay)."""

from __future__ import annotations

from pathlib import Path

from rhone_local.retention import Retention

from ._cases import Target, _owned_production, _preview_ready
from .conftest import LocalEnv


def _rewrite_route_history_as_old(local: LocalEnv) -> None:
    with local.store.write() as c:
        c.execute("UPDATE route_events SET created_at = '2020-01-01T00:00:00.000Z'")


def test_rollback_targets_and_recent_deployments_are_kept(local: LocalEnv) -> None:
    target = Target()
    first, second = _owned_production(local, target, owners=2)  # second owns production; first is its rollback target
    later = [_preview_ready(local, target) for _ in range(12)]
    retention = Retention(local.workers.topology.pipeline, keep_last=10, history_days=30)
    kept = retention.kept_deployments()
    assert {first, second} <= kept  # owner, and the deployment a rollback returns to
    assert set(later[-10:]) <= kept  # the last 10
    assert not set(later[:2]) & kept  # neither recent nor an owner
    # Outside the history window, an old owner is still kept as long as it is the route's rollback target.
    _rewrite_route_history_as_old(local)
    assert {first, second} <= retention.kept_deployments()


def test_a_run_removes_work_folders_of_deployments_nothing_keeps_and_rows_stay(local: LocalEnv, tmp_path: Path) -> None:
    target = Target()
    deployments = [_preview_ready(local, target) for _ in range(4)]
    pipeline = local.workers.topology.pipeline
    for deployment_id in deployments:
        work = pipeline.workdir(deployment_id)
        (work / "build").mkdir(parents=True)
        (work / "build" / "big").write_bytes(b"x" * 1000)
        (work / "build.log").write_text("$ make\n")
    before = local.snapshot()
    retention = Retention(pipeline, keep_last=2, history_days=30, grace_seconds=3600)
    dry = retention.run(dry_run=True)
    assert dry["removed"]["builds"] == 4 and all(pipeline.workdir(d).exists() for d in deployments)
    result = retention.run()
    assert result["removed"] == dry["removed"]
    # Dropped deployments lose their folder; kept ones keep their build log but not their build tree.
    assert not pipeline.workdir(deployments[0]).exists() and not pipeline.workdir(deployments[1]).exists()
    for kept in deployments[2:]:
        assert (pipeline.workdir(kept) / "build.log").exists() and not (pipeline.workdir(kept) / "build").exists()
    assert local.snapshot() == before  # files only: no row changed
    assert retention.run(dry_run=True)["total_bytes"] == 0
