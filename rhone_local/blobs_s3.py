"""Blobs on the S3 API (`rhone local up --blobs s3://bucket/prefix`), for nodes that share no disk (docs/multi-node.md,
"Blobs"). The same `BlobStorage` contract as the filesystem store (rhone_local/blobs.py), over boto3:

- keys mirror the filesystem layout: `<prefix>/sha256/ab/cdef…`;
- an upload is verified before it becomes visible: a blob up to one part is sent only once its digest matched;
  larger ones go up as a multipart upload that is completed only when the whole stream hashed to its digest, and
  aborted otherwise (an interrupted or tampered upload leaves no object);
- every read is verified on the way out (`VerifiedReader`): an object changed behind Rhone's back fails closed.

The endpoint and credentials come from the standard AWS environment variables (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`…) or `--blobs-endpoint`. Imported
only when `--blobs` names S3: boto3 is in the `cluster` extra.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rhone_local.blobs import CHUNK, MAX_BLOB_BYTES, VerifiedReader, blob_missing, digest_of_file
from rhone_local.domain.errors import DomainError
from rhone_local.domain.manifest import DIGEST

PART_BYTES = 8 * 1024 * 1024  # above S3's 5 MiB minimum part size
TIMEOUT_SECONDS = 30
BUCKET_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789.-")


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix) of `s3://bucket[/prefix]`; ValueError naming what is wrong."""
    parts = urlsplit(url)
    bucket = parts.netloc
    if parts.scheme != "s3" or not bucket:
        raise ValueError(f"--blobs {url!r}: expected s3://BUCKET[/PREFIX]")
    if not (3 <= len(bucket) <= 63 and set(bucket) <= BUCKET_NAME_CHARS) or parts.query or parts.fragment:
        raise ValueError(f"--blobs {url!r}: {bucket!r} is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
    prefix = parts.path.strip("/")
    if ".." in prefix.split("/"):
        raise ValueError(f"--blobs {url!r}: the prefix may not contain '..'")
    return bucket, prefix


def _not_found(error: Exception) -> bool:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound")


class S3BlobStore:
    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix

    @classmethod
    def from_url(cls, url: str, *, endpoint: str | None = None) -> S3BlobStore:
        bucket, prefix = parse_url(url)
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ValueError(f"--blobs-endpoint {endpoint!r}: expected an http:// or https:// URL")
        import boto3
        from botocore.config import Config

        config = Config(connect_timeout=TIMEOUT_SECONDS, read_timeout=TIMEOUT_SECONDS, retries={"max_attempts": 3})
        return cls(boto3.client("s3", endpoint_url=endpoint, config=config), bucket, prefix)

    def check(self) -> None:
        """The bucket exists and these credentials reach it (at start-up: a wrong flag refuses the start)."""
        self.client.head_bucket(Bucket=self.bucket)

    def key(self, digest: str) -> str:
        if not DIGEST.match(digest):
            raise DomainError("invalid_digest", f"{digest!r} is not a sha256:<64 hex> digest", 422)
        hexdigest = digest.removeprefix("sha256:")
        return "/".join(p for p in (self.prefix, "sha256", hexdigest[:2], hexdigest[2:]) if p)

    def _head(self, digest: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
        except ClientError as error:
            if _not_found(error):
                return None
            raise

    def has(self, digest: str) -> bool:
        return self._head(digest) is not None

    def missing(self, digests: Iterable[str]) -> list[str]:
        return [d for d in dict.fromkeys(digests) if not self.has(d)]

    def size(self, digest: str) -> int | None:
        head = self._head(digest)
        return None if head is None else int(head["ContentLength"])

    def open(self, digest: str) -> VerifiedReader:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(digest))["Body"]
        except ClientError as error:
            if _not_found(error):
                raise blob_missing(digest) from None
            raise
        return VerifiedReader(body, digest)

    def delete(self, digest: str) -> bool:
        existed = self.has(digest)
        self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))
        return existed

    def put_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            self.client.put_object(Bucket=self.bucket, Key=self.key(digest), Body=data)
        return digest

    def put_file(self, source: Path) -> str:
        digest = digest_of_file(source)
        if not self.has(digest):
            with source.open("rb") as handle:
                self._upload(digest, iter(lambda: handle.read(CHUNK), b""))
        return digest

    async def write(self, digest: str, chunks: AsyncIterator[bytes], *, declared_size: int | None = None) -> bool:
        if self.has(digest):
            async for _ in chunks:  # drain the body so the connection stays usable
                pass
            return False
        with self._verified_upload(digest, declared_size) as upload:
            async for chunk in chunks:
                upload.add(chunk)
        return True

    def _upload(self, digest: str, chunks: Iterable[bytes]) -> None:
        with self._verified_upload(digest, None) as upload:
            for chunk in chunks:
                upload.add(chunk)

    @contextlib.contextmanager
    def _verified_upload(self, digest: str, declared_size: int | None) -> Iterator[_Upload]:
        """An upload the caller feeds; visible once the block ends and the bytes verified, aborted otherwise."""
        upload = _Upload(self, self.key(digest))
        try:
            yield upload
            upload.verify(digest, declared_size)
            upload.finish()
        except BaseException:
            upload.abort()
            raise


class _Upload:
    """One blob on its way up: buffered to a part, hashed as it comes, made visible only by `finish`."""

    def __init__(self, store: S3BlobStore, key: str) -> None:
        self.store, self.key = store, key
        self.hasher = hashlib.sha256()
        self.size = 0
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > MAX_BLOB_BYTES:
            raise DomainError("blob_too_large", f"blobs are limited to {MAX_BLOB_BYTES} bytes", 413)
        self.hasher.update(chunk)
        self.buffer += chunk
        if len(self.buffer) >= PART_BYTES:
            self._send_part()

    def _send_part(self) -> None:
        client, bucket = self.store.client, self.store.bucket
        if self.upload_id is None:
            self.upload_id = client.create_multipart_upload(Bucket=bucket, Key=self.key)["UploadId"]
        number = len(self.parts) + 1
        answer = client.upload_part(
            Bucket=bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=bytes(self.buffer)
        )
        self.parts.append({"ETag": answer["ETag"], "PartNumber": number})
        self.buffer.clear()

    def verify(self, digest: str, declared_size: int | None) -> None:
        actual = "sha256:" + self.hasher.hexdigest()
        if actual != digest:
            raise DomainError(
                "digest_mismatch",
                f"the uploaded content has digest {actual}, not {digest}",
                409,
                {"expected": digest, "actual": actual, "size": self.size},
            )
        if declared_size is not None and self.size != declared_size:
            raise DomainError("size_mismatch", f"received {self.size} bytes, expected {declared_size}", 409)

    def finish(self) -> None:
        client, bucket = self.store.client, self.store.bucket
        if self.upload_id is None:
            client.put_object(Bucket=bucket, Key=self.key, Body=bytes(self.buffer))
            return
        if self.buffer:
            self._send_part()
        client.complete_multipart_upload(
            Bucket=bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )
        self.upload_id = None

    def abort(self) -> None:
        if self.upload_id is not None:
            self.store.client.abort_multipart_upload(Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id)
            self.upload_id = None
