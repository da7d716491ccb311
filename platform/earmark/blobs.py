"""Content-addressed blob store over a local directory or S3 (boto3).

Keys are ``sha256/ab/cd/<sha256>``: the same bytes are stored once, wherever they come from. Writes
land completely before they become visible (temp file + rename locally; a single PUT or a completed
multipart upload on S3), and callers insert the database row only after ``put`` returns, so no row
can point at a blob that was not written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar
from urllib.parse import urlparse

from earmark.errors import BlobCorrupt, BlobError, BlobMissing, InvalidInput

log = logging.getLogger(__name__)
CHUNK = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    uri: str
    bytes: int


def blob_key(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise InvalidInput(f"{sha256!r} is not a sha256 hex digest (64 lowercase hex characters)")
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def _spool(stream: BinaryIO, directory: str | None = None) -> tuple[BinaryIO, str, int]:
    """Copy a stream into a temp file while hashing it (we need the hash before the key)."""
    h = hashlib.sha256()
    size = 0
    tmp = tempfile.NamedTemporaryFile(dir=directory, prefix=".incoming-", delete=False)  # noqa: SIM115
    try:
        while chunk := stream.read(CHUNK):
            h.update(chunk)
            tmp.write(chunk)
            size += len(chunk)
        tmp.flush()
        tmp.seek(0)
    except BaseException:
        tmp.close()
        os.unlink(tmp.name)
        raise
    return tmp, h.hexdigest(), size  # type: ignore[return-value]


class BlobStore(Protocol):
    url: str

    def put_stream(self, stream: BinaryIO) -> StoredBlob: ...
    def open(self, sha256: str) -> BinaryIO: ...
    def exists(self, sha256: str) -> bool: ...
    def delete(self, sha256: str) -> None: ...
    def iter_digests(self) -> Iterator[str]: ...
    def modified_at(self, sha256: str) -> float: ...
    def presigned_url(self, sha256: str, expires_s: int = 900) -> str: ...


class _Common:
    """Byte-level helpers shared by both backends."""

    def put_bytes(self, data: bytes) -> StoredBlob:
        import io

        return self.put_stream(io.BytesIO(data))  # type: ignore[attr-defined]

    def put_file(self, path: str | Path) -> StoredBlob:
        with open(path, "rb") as f:
            return self.put_stream(f)  # type: ignore[attr-defined]

    def get_bytes(self, sha256: str, *, verify: bool = True) -> bytes:
        with self.open(sha256) as f:  # type: ignore[attr-defined]
            data = f.read()
        if verify and hashlib.sha256(data).hexdigest() != sha256:
            raise BlobCorrupt(
                f"blob {sha256} is corrupt: its content hash does not match its name; "
                "restore it from a backup or delete it and re-run the job that wrote it"
            )
        return data


class LocalBlobStore(_Common):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = self.root.as_uri()

    def _path(self, sha256: str) -> Path:
        return self.root / blob_key(sha256)

    def put_stream(self, stream: BinaryIO) -> StoredBlob:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp, digest, size = _spool(stream, directory=str(self.root))
        tmp.close()
        dest = self._path(digest)
        try:
            if dest.exists() and dest.stat().st_size == size:
                os.unlink(tmp.name)  # dedup: identical content is already there
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp.name, dest)  # atomic: readers see all bytes or none
        except BaseException:
            if os.path.exists(tmp.name):
                os.unlink(tmp.name)
            raise
        return StoredBlob(digest, dest.as_uri(), size)

    def open(self, sha256: str) -> BinaryIO:
        try:
            return open(self._path(sha256), "rb")
        except FileNotFoundError:
            raise BlobMissing(
                f"blob {sha256} is missing from {self.url}; check EARMARK_BLOB_URL points at the store that wrote it"
            ) from None

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).exists()

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def modified_at(self, sha256: str) -> float:
        return self._path(sha256).stat().st_mtime

    def iter_digests(self) -> Iterator[str]:
        base = self.root / "sha256"
        if base.exists():
            for p in base.glob("*/*/*"):
                if p.is_file():
                    yield p.name

    def presigned_url(self, sha256: str, expires_s: int = 900) -> str:
        # A local directory has no signing; the file URI is only usable on this machine.
        return self._path(sha256).as_uri()


BUCKET_READY_S = 20.0  # how long a 404 to CreateBucket is taken for a gateway still starting


BUCKET_MISSING = ("404", "NoSuchBucket", "NotFound")  # S3 error codes of a bucket that is not there


def _s3_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3BlobStore(_Common):
    """S3 through boto3; works with AWS, MinIO and SeaweedFS (``endpoint_url``)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        create_bucket: bool = True,
        retries: int = 10,
    ) -> None:
        """``retries``: attempts per request, left to botocore (standard mode: connection errors,
        5xx and throttling are retried with jittered exponential backoff, capped at 20 s; ten
        attempts ride out an S3 server restart of several seconds)."""
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.retries = retries
        self.endpoint_url = endpoint_url
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                retries={"max_attempts": retries, "mode": "standard"},
                connect_timeout=3,
                read_timeout=30,
                signature_version="s3v4",
                s3={"addressing_style": "path"},
            ),
        )
        if create_bucket:
            self._call(self._ensure_bucket, "create bucket")

    def _ensure_bucket(self) -> None:
        """Create the bucket if it is missing. A SeaweedFS S3 gateway that has just started can
        answer 404 to CreateBucket for a moment (seen in CI right after `weed` reported ready):
        that is retried with backoff for up to BUCKET_READY_S, then raised."""
        from botocore.exceptions import ClientError

        deadline, delay = time.monotonic() + BUCKET_READY_S, 0.2
        while True:
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if _s3_code(exc) not in BUCKET_MISSING:
                    raise
            try:
                self.client.create_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                code = _s3_code(exc)
                if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    return  # another process created it in between
                if code not in BUCKET_MISSING or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _key(self, sha256: str) -> str:
        key = blob_key(sha256)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, fn: Callable[[], T], what: str) -> T:
        """Run one S3 call (botocore retries it); an endpoint still unreachable after every attempt
        becomes a BlobError that names the endpoint and the fix."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except ClientError:
            raise
        except (BotoCoreError, ConnectionError) as exc:
            raise BlobError(
                f"S3 endpoint {self.endpoint_url or 'aws'} unreachable during {what} after "
                f"{self.retries} attempts ({type(exc).__name__}); check that the S3 server is up"
            ) from exc

    def put_stream(self, stream: BinaryIO) -> StoredBlob:
        tmp, digest, size = _spool(stream)
        tmp.close()
        key = self._key(digest)
        try:
            if not self.exists(digest):

                def upload() -> None:
                    with open(tmp.name, "rb") as f:
                        self.client.upload_fileobj(f, self.bucket, key, ExtraArgs={"Metadata": {"sha256": digest}})

                self._call(upload, f"upload of {digest[:12]}")
        finally:
            os.unlink(tmp.name)
        return StoredBlob(digest, f"s3://{self.bucket}/{key}", size)

    def open(self, sha256: str) -> BinaryIO:
        from botocore.exceptions import ClientError

        key = self._key(sha256)
        try:
            obj = self._call(lambda: self.client.get_object(Bucket=self.bucket, Key=key), "download")
        except ClientError as exc:
            if _s3_code(exc) in ("NoSuchKey", "404"):
                raise BlobMissing(
                    f"blob {sha256} is missing from s3://{self.bucket}/{key}; check EARMARK_BLOB_URL and "
                    "the bucket's lifecycle rules"
                ) from None
            raise
        return obj["Body"]  # a streaming body: read() in chunks for large blobs

    def exists(self, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._call(lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(sha256)), "head")
            return True
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise

    def delete(self, sha256: str) -> None:
        self._call(lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(sha256)), "delete")

    def modified_at(self, sha256: str) -> float:
        head = self._call(lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(sha256)), "head")
        return head["LastModified"].timestamp()

    def iter_digests(self) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = f"{self.prefix}/sha256/" if self.prefix else "sha256/"
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"].rsplit("/", 1)[-1]

    def presigned_url(self, sha256: str, expires_s: int = 900) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(sha256)}, ExpiresIn=expires_s
        )


def open_blob_store(
    url: str, *, endpoint_url: str | None = None, region: str = "us-east-1"
) -> LocalBlobStore | S3BlobStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalBlobStore(parsed.path)
    if parsed.scheme == "s3":
        return S3BlobStore(parsed.netloc, parsed.path, endpoint_url=endpoint_url, region=region)
    raise InvalidInput(f"blob URL {url!r}: use file:///abs/dir or s3://bucket/prefix")


def copy_to(store: LocalBlobStore | S3BlobStore, sha256: str, dest: Path) -> Path:
    with store.open(sha256) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
    return dest
