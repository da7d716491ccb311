"""Cluster mode: one round of the loop on a two-node Ray cluster, an external PostgreSQL and S3.

What production looks like, shrunk onto this machine: `ray start --head` and `ray start --address`
(two raylets, one CPU each, so a pool of two 1-CPU actors must span both nodes), the machine's
PostgreSQL server (a fresh database migrated by `earmark db upgrade`, the pre-deploy job of
infra/), SeaweedFS as the S3 blob store, and every setting taken from ``EARMARK_*`` variables as
the KubeRay Secret/ConfigMap deliver them.

Two loopback addresses (127.0.0.2 head, 127.0.0.3 worker) keep all traffic on `lo`: Ray rewrites
127.0.0.1 to the machine's external address once multi-node mode is enabled, and refuses a second
node when it is disabled. Each node gets its own temp dir and explicit ports. The nodes are stopped
by signalling their own `ray start --block` process (and killing what is left of its process tree):
never `ray stop`, which kills every Ray process on the machine, other test runs' included.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import psutil
import pytest
from pipeline_fixtures import seed_offline
from sqlalchemy import text

pytestmark = [pytest.mark.slow, pytest.mark.s3]

VENV_BIN = Path(sys.executable).parent  # `ray` from the same venv: workers run this interpreter
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
START_TIMEOUT_S = 60
N_PROMPTS, SAMPLES = 3, 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RAY_AUTH_MODE": "disabled",
            # Needed for `ray start --address` at all; the loopback node IPs keep it off the external NIC.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # SIGTERM tears the node down at once
            "OMP_NUM_THREADS": "1",
        }
    )
    for key in [k for k in env if k.startswith("EARMARK_")]:
        del env[key]  # nodes must not inherit the test session's local-Ray settings
    return env


@dataclass
class RayNode:
    name: str
    process: subprocess.Popen[bytes]
    temp_dir: Path
    log: Path
    tree: list[psutil.Process] = field(default_factory=list)


def _start_node(name: str, args: list[str], base: Path) -> RayNode:
    temp_dir, log = base / name, base / f"{name}.log"
    cmd = [
        str(VENV_BIN / "ray"),
        "start",
        *args,
        "--num-cpus=1",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        f"--node-manager-port={_free_port()}",
        f"--object-manager-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--dashboard-agent-grpc-port={_free_port()}",
        f"--runtime-env-agent-port={_free_port()}",
        f"--metrics-export-port={_free_port()}",
        "--block",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=_node_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    node = RayNode(name, proc, temp_dir, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"`ray start` ({name}) exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if b"Ray runtime started" in log.read_bytes():
            return node
        time.sleep(0.2)
    _stop_nodes([node])
    raise RuntimeError(f"`ray start` ({name}) not up within {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


def _stop_nodes(nodes: list[RayNode]) -> None:
    """SIGTERM each node's own `ray start --block` (it stops its raylet, GCS, agents and workers),
    then SIGKILL whatever of that node's process tree survives. Touches no other Ray."""
    for node in nodes:
        try:
            node.tree = psutil.Process(node.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            node.tree = []
        if node.process.poll() is None:
            node.process.terminate()
    for node in nodes:
        try:
            node.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait(timeout=5)
        _gone, alive = psutil.wait_procs(node.tree, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)


@dataclass
class Cluster:
    address: str
    nodes: list[RayNode]


def _loopback_alias_usable(ip: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_cluster(seaweed) -> Iterator[Cluster]:
    """Two Ray nodes; after `seaweed`, so the nodes inherit the S3 keys the server enforces."""
    import ray

    from pipelines.ray_runtime import ensure_ray, shutdown

    if not all(_loopback_alias_usable(ip) for ip in (HEAD_IP, WORKER_IP)):
        pytest.skip(f"{HEAD_IP}/{WORKER_IP} are not loopback addresses here (Linux routes all of 127/8 to lo)")
    had_local_ray = ray.is_initialized()
    shutdown()  # the session's local ray.init() (other modules) must not be the one we talk to
    base = Path(tempfile.mkdtemp(prefix="emrc-"))  # short: Ray's unix socket paths have a length limit
    port = _free_port()
    nodes: list[RayNode] = []
    try:
        nodes.append(
            _start_node(
                "head",
                [
                    "--head",
                    f"--port={port}",
                    f"--node-ip-address={HEAD_IP}",
                    "--include-dashboard=false",
                    f"--dashboard-port={_free_port()}",
                ],
                base,
            )
        )
        nodes.append(_start_node("worker", [f"--address={HEAD_IP}:{port}", f"--node-ip-address={WORKER_IP}"], base))
        yield Cluster(f"{HEAD_IP}:{port}", nodes)
    finally:
        shutdown()
        _stop_nodes(nodes)
        shutil.rmtree(base, ignore_errors=True)
        if had_local_ray:  # give later modules back the local Ray they set up
            with mock.patch.dict(os.environ):
                os.environ.pop("EARMARK_RAY_ADDRESS", None)
                from earmark.config import Settings

                ensure_ray(Settings(), num_cpus=2)


@pytest.fixture
def cluster_db() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL server, migrated by the CLI as the deploy job does."""
    from conftest import fresh_database

    url, drop = fresh_database("earmark_cluster")
    try:
        yield url
    finally:
        drop()


def _cli(*args: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [str(VENV_BIN / "earmark"), *args], env=env, check=False, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"earmark {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_round_on_two_node_cluster_with_postgres_and_s3(ray_cluster, cluster_db, seaweed, checkpoint, tmp_path) -> None:
    import boto3
    import ray

    import earmark
    from earmark.blobs import blob_key
    from earmark.config import Settings
    from pipelines.rollout_job import RolloutJobConfig, run_rollout_job
    from pipelines.scoring_job import ScorerSpec, ScoringJobConfig, run_scoring_job

    bucket = f"earmark-cluster-{uuid.uuid4().hex[:8]}"
    deploy_env = {
        "EARMARK_DATABASE_URL": cluster_db,
        "EARMARK_BLOB_URL": f"s3://{bucket}/blobs",
        "EARMARK_S3_ENDPOINT_URL": seaweed.endpoint,
        "EARMARK_RAY_ADDRESS": ray_cluster.address,
        # a pod's own data directory: the checkout's ./.earmark may hold a demo run's local blobs
        "EARMARK_HOME": str(tmp_path / "pod-home"),
    }
    with mock.patch.dict(os.environ, deploy_env):
        # the pre-deploy migration job, then the check an operator runs
        _cli("db", "upgrade", env=dict(os.environ))
        assert "up to date" in _cli("db", "current", env=dict(os.environ))

        settings = Settings()  # from EARMARK_* exactly as a KubeRay pod gets them
        assert settings.ray_address == ray_cluster.address
        em = earmark.connect(settings, upgrade=False, pool_size=4)
        try:
            seed_offline(em, checkpoint, n_prompts=N_PROMPTS, multi=False)
            res = run_rollout_job(
                em,
                RolloutJobConfig(
                    policy="offline-speech",
                    samples=SAMPLES,
                    actors=2,
                    cpus_per_actor=1,
                    batch_size=1,
                    max_new_tokens=32,
                ),
                progress=False,
            )
            # joined the cluster, not a local Ray; both raylets hosted a policy actor
            alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
            ips = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
            assert len(alive) == 2 and ips == {HEAD_IP, WORKER_IP}
            assert res.actors == 2 and len(res.nodes) == 2 and set(res.nodes) == alive

            scored = run_scoring_job(
                em, ScoringJobConfig(scorers=[ScorerSpec(name="prosody")], actors=2, batch_size=2), progress=False
            )

            # same shape as the embedded run: prompts x samples rows, each with audio and scores
            n = N_PROMPTS * SAMPLES
            assert (res.planned, res.written, res.failed_batches) == (n, n, 0)
            assert scored.rollouts == n and sum(scored.per_scorer.values()) == n
            rows = em.rollouts.list()
            assert len(rows) == n
            assert len({(r.prompt_id, r.sample_index) for r in rows}) == n
            assert all(r.text.strip() and r.token_ids and r.audio_sha256 and r.duration_s > 0 for r in rows)
            with em.session() as s:
                per_rollout = dict(
                    s.execute(
                        text(
                            "SELECT r.id, count(rs.*) FROM rollouts r LEFT JOIN reward_scores rs ON rs.rollout_id = r.id "
                            "GROUP BY r.id"
                        )
                    ).all()
                )
            assert len(per_rollout) == n and all(c >= 1 for c in per_rollout.values())

            # audio landed in S3 (content-addressed keys), not on a node's disk
            s3 = boto3.client("s3", endpoint_url=seaweed.endpoint, region_name="us-east-1")
            keys = {
                o["Key"]
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="blobs/")
                for o in page.get("Contents", [])
            }
            assert {f"blobs/{blob_key(r.audio_sha256)}" for r in rows} <= keys
            assert not (settings.home_dir / "blobs").exists() or not any((settings.home_dir / "blobs").iterdir())
        finally:
            em.close()
