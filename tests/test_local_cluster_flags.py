"""`rhone local up --store/--blobs/--blobs-endpoint/--events` (docs/multi-node.md): a URL the server could not use is a
usage error (exit 2) naming the expected form, before anything is created or started; the same rules apply to the
variables that stand for the flags."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("args", "environ", "said"),
    [
        (["--blobs", "file:///srv/blobs"], {}, "--blobs must be s3://BUCKET[/PREFIX]"),
        (["--blobs", "s3://Bad_Bucket"], {}, "--blobs must be s3://BUCKET[/PREFIX]"),
        (["--blobs", "s3://bucket/../other"], {}, "no '..'"),
        (["--blobs-endpoint", "http://127.0.0.1:9000"], {}, "--blobs-endpoint needs --blobs"),
        (["--blobs", "s3://bucket", "--blobs-endpoint", "ftp://h"], {}, "http:// or https://"),
        (["--events", "http://127.0.0.1:4222"], {}, "--events must be a NATS URL"),
        (["--events", "nats://"], {}, "--events must be a NATS URL"),
        ([], {"RHONE_LOCAL_BLOBS": "gs://bucket"}, "--blobs must be s3://BUCKET[/PREFIX]"),
        ([], {"RHONE_LOCAL_EVENTS": "redis://127.0.0.1:6379"}, "--events must be a NATS URL"),
        (["--store", "mysql://u@h/db"], {}, "--store must be a PostgreSQL URL"),
        (["--store", "postgresql://u@127.0.0.1:5432"], {}, "--store must be a PostgreSQL URL"),
        ([], {"RHONE_LOCAL_STORE": "sqlite:///tmp/x.db"}, "--store must be a PostgreSQL URL"),
    ],
)
def test_an_unusable_cluster_url_is_a_usage_error_and_starts_nothing(rhone, tmp_path, args, environ, said):
    data_dir = tmp_path / "data"
    result = rhone("local", "up", "--data-dir", str(data_dir), "--port", "31001", *args, environ=environ)
    assert result.exit_code == 2, result.stderr
    assert said in result.stderr and "Traceback" not in result.stderr
    assert not data_dir.exists()
