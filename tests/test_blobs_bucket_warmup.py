"""A SeaweedFS gateway that has just started can answer 404 to CreateBucket for a moment (seen
in CI): creating the bucket waits that out, a lasting 404 or another error is raised, and a bucket
made by another process in between counts as made. Driven through botocore's own Stubber, since
the gateway's warm-up cannot be produced on demand."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

import earmark.blobs as blobs
from earmark.blobs import S3BlobStore


def _store(monkeypatch) -> tuple[S3BlobStore, Stubber]:
    # a default boto3 session of this test's own: botocore caches the credentials it resolves,
    # so these made-up ones must not stay behind for the real S3 tests that run later
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    store = S3BlobStore("warm", endpoint_url="http://127.0.0.1:9", create_bucket=False)
    return store, Stubber(store.client)


def test_create_bucket_404_while_the_gateway_starts_is_retried(monkeypatch) -> None:
    store, stub = _store(monkeypatch)
    monkeypatch.setattr(blobs.time, "sleep", lambda s: None)
    for _ in range(3):
        stub.add_client_error("head_bucket", "404", http_status_code=404)
        stub.add_client_error("create_bucket", "404", http_status_code=404)
    stub.add_client_error("head_bucket", "404", http_status_code=404)
    stub.add_response("create_bucket", {})
    with stub:
        store._ensure_bucket()
        stub.assert_no_pending_responses()


def test_a_lasting_404_or_another_error_is_raised(monkeypatch) -> None:
    store, stub = _store(monkeypatch)
    monkeypatch.setattr(blobs, "BUCKET_READY_S", 0.0)
    stub.add_client_error("head_bucket", "404", http_status_code=404)
    stub.add_client_error("create_bucket", "404", http_status_code=404)
    with stub, pytest.raises(ClientError, match="404"):
        store._ensure_bucket()
    store, stub = _store(monkeypatch)
    stub.add_client_error("head_bucket", "404", http_status_code=404)
    stub.add_client_error("create_bucket", "AccessDenied", http_status_code=403)
    with stub, pytest.raises(ClientError, match="AccessDenied"):
        store._ensure_bucket()


def test_bucket_made_by_another_process_in_between(monkeypatch) -> None:
    store, stub = _store(monkeypatch)
    stub.add_client_error("head_bucket", "404", http_status_code=404)
    stub.add_client_error("create_bucket", "BucketAlreadyOwnedByYou", http_status_code=409)
    with stub:
        store._ensure_bucket()
        stub.assert_no_pending_responses()
