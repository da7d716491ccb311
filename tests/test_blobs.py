"""Blob store on a local directory and on a real S3 server (SeaweedFS)."""

from __future__ import annotations

import hashlib
import io
import urllib.request

import pytest
from audio_util import tone_wav

from earmark.blobs import LocalBlobStore, blob_key
from earmark.errors import BlobCorrupt, BlobMissing, InvalidInput


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    return request.getfixturevalue("s3_store")


def test_round_trip_and_dedup(store) -> None:
    data = tone_wav()
    a = store.put_bytes(data)
    b = store.put_stream(io.BytesIO(data))
    assert a.sha256 == b.sha256 == hashlib.sha256(data).hexdigest()
    assert a.bytes == len(data)
    assert store.get_bytes(a.sha256) == data
    assert list(store.iter_digests()) == [a.sha256]  # stored once
    with store.open(a.sha256) as f:  # streaming read in chunks
        chunks = []
        while chunk := f.read(1000):
            chunks.append(chunk)
    assert b"".join(chunks) == data


def test_large_stream_is_not_buffered_whole(store) -> None:
    payload = bytes(range(256)) * (3 * 1024 * 1024 // 256 + 7)  # ~3 MiB, above the 1 MiB chunk
    ref = store.put_stream(io.BytesIO(payload))
    assert ref.bytes == len(payload) and store.get_bytes(ref.sha256) == payload


def test_missing_blob_is_a_clear_error(store) -> None:
    with pytest.raises(BlobMissing, match="missing"):
        store.get_bytes("0" * 64)
    assert not store.exists("0" * 64)


def test_bad_digest_is_refused(store) -> None:
    with pytest.raises(InvalidInput, match="sha256 hex digest"):
        store.get_bytes("../../etc/passwd")


def test_corrupt_local_blob_detected(tmp_path) -> None:
    store = LocalBlobStore(tmp_path)
    ref = store.put_bytes(b"hello audio")
    (tmp_path / blob_key(ref.sha256)).write_bytes(b"hellO audio")
    with pytest.raises(BlobCorrupt, match="corrupt"):
        store.get_bytes(ref.sha256)


def test_corrupt_s3_blob_detected(s3_store) -> None:
    ref = s3_store.put_bytes(b"hello audio")
    s3_store.client.put_object(Bucket=s3_store.bucket, Key=s3_store._key(ref.sha256), Body=b"tampered")
    with pytest.raises(BlobCorrupt):
        s3_store.get_bytes(ref.sha256)


def test_presigned_url_serves_the_bytes(s3_store) -> None:
    ref = s3_store.put_bytes(b"presigned bytes")
    url = s3_store.presigned_url(ref.sha256, expires_s=60)
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
        assert resp.read() == b"presigned bytes"


def test_delete_and_iter(store) -> None:
    a = store.put_bytes(b"one")
    b = store.put_bytes(b"two")
    assert set(store.iter_digests()) == {a.sha256, b.sha256}
    store.delete(a.sha256)
    assert set(store.iter_digests()) == {b.sha256}
