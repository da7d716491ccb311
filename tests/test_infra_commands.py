"""Every command the deployment files run goes through the real CLI parsers (earmark's typer app,
Ray's click CLI) without being executed: a renamed or removed option fails here, not in a pod.

Sources: infra/compose.yaml (service commands, health checks and the usage lines in its header),
infra/Dockerfile (CMD), every Kubernetes manifest (container command/args, RayJob entrypoints,
rayStartParams), and the image's Ray pin against the manifests' rayVersion."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from earmark.cli.main import app

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
MANIFESTS = sorted((INFRA / "k8s").rglob("*.yaml"))


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _split_shell(cmd: list[str] | str) -> list[list[str]]:
    """argv lists; `sh -c "a && b"` becomes [a, b]."""
    argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    if argv[:2] in (["/bin/sh", "-c"], ["sh", "-c"], ["/bin/bash", "-c"]):
        return [shlex.split(part) for part in re.split(r"&&|;|\|\|", argv[2]) if part.strip()]
    return [argv]


def _walk_containers(obj: Any):
    if isinstance(obj, dict):
        if "image" in obj and "name" in obj:
            yield obj
        for v in obj.values():
            yield from _walk_containers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_containers(v)


def _lifecycle_commands(container: dict[str, Any]):
    for hook in (container.get("lifecycle") or {}).values():
        if "exec" in hook:
            yield hook["exec"]["command"]


def collect() -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        if "EARMARK_IMAGE" not in str(svc.get("image", "")):
            continue  # third-party images (postgres, seaweedfs) run their own commands
        for key in ("command", "entrypoint"):
            if key in svc:
                out += [(f"compose {name}.{key}", a) for a in _split_shell(svc[key])]
        test = (svc.get("healthcheck") or {}).get("test")
        if test and test[0] == "CMD":
            out.append((f"compose {name}.healthcheck", test[1:]))
    # the usage lines in compose.yaml's header: `docker compose ... run|exec SERVICE earmark ...`
    for line in (INFRA / "compose.yaml").read_text().splitlines():
        m = re.match(r"#\s+docker compose .* (?:run --rm|exec) [\w-]+ (earmark .*?)(?:\s+#.*)?$", line)
        if m:
            out.append(("compose header", shlex.split(m.group(1))))
    for word, rest in _dockerfile_instructions():
        if word in ("CMD", "ENTRYPOINT") and rest.startswith("["):
            argv = yaml.safe_load(rest)
            if argv[0] != "/usr/bin/tini":
                out.append((f"Dockerfile {word}", argv))
    for path in MANIFESTS:
        rel = path.relative_to(REPO)
        for doc in _docs(path):
            spec = doc.get("spec") or {}
            if doc.get("kind") == "RayJob":
                out.append((f"{rel} entrypoint", shlex.split(spec["entrypoint"])))
            for c in _walk_containers(doc):
                cmd = [*c.get("command", []), *c.get("args", [])]
                if cmd:
                    out += [(f"{rel} {c['name']}", a) for a in _split_shell(cmd)]
                out += [
                    (f"{rel} {c['name']} lifecycle", a) for cmd in _lifecycle_commands(c) for a in _split_shell(cmd)
                ]
            for params in _ray_start_params(doc):
                head = "--head" if params.pop("__head__") else "--address=ray-head:6379"
                out.append(
                    (f"{rel} rayStartParams", ["ray", "start", head, *(f"--{k}={v}" for k, v in params.items())])
                )
    return out


def _ray_start_params(doc: dict[str, Any]):
    spec = doc.get("spec") or {}
    cluster = spec.get("rayClusterSpec", spec) if doc.get("kind") in ("RayJob", "RayCluster") else {}
    if "headGroupSpec" in cluster:
        yield {"__head__": True, **cluster["headGroupSpec"].get("rayStartParams", {})}
    for group in cluster.get("workerGroupSpecs", []):
        yield {"__head__": False, **group.get("rayStartParams", {})}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (INFRA / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


class DoesNotParse(Exception):
    pass


def parse(root: Any, prog: str, args: list[str]) -> Any:
    """Parse ARGS down the command tree as the CLI would, without running anything. Works for
    click and for typer's vendored click alike (matched by class name, not by import)."""
    cmd = root
    try:
        ctx = root.make_context(prog, list(args))
        while hasattr(cmd, "resolve_command"):
            rest = [*ctx._protected_args, *ctx.args]
            if not rest:
                break
            name, sub, rest = cmd.resolve_command(ctx, rest)
            if sub is None:
                raise DoesNotParse(f"no command {rest}")
            cmd, ctx = sub, sub.make_context(name or "", rest, parent=ctx)
    except Exception as exc:
        names = {k.__name__ for k in type(exc).__mro__}
        if "Exit" in names:  # --help
            assert getattr(exc, "exit_code", 0) == 0
        elif "UsageError" in names:
            raise DoesNotParse(exc.format_message()) from None
        else:
            raise
    return cmd


def _ray_cli() -> Any:
    from ray.scripts.scripts import cli

    return cli


CASES = collect()


def test_every_source_contributes() -> None:
    where = " ".join(w for w, _ in CASES)
    for src in ("compose ", "compose header", "Dockerfile CMD", "rollout.yaml", "score.yaml", "train-dpo.yaml"):
        assert src in where, f"no command found in {src}"
    assert "db-upgrade.yaml" in where and "rayStartParams" in where


@pytest.mark.parametrize(("where", "argv"), CASES, ids=[f"{w}: {' '.join(a)[:60]}" for w, a in CASES])
def test_command_parses(where: str, argv: list[str]) -> None:
    prog, args = argv[0], argv[1:]
    if prog == "earmark":
        try:
            cmd = parse(typer.main.get_command(app), prog, args)
        except DoesNotParse as exc:
            pytest.fail(f"{where}: `{' '.join(argv)}` does not parse: {exc}")
        assert cmd is not None
    elif prog == "ray":
        try:
            parse(_ray_cli(), prog, args)
        except DoesNotParse as exc:
            pytest.fail(f"{where}: `{' '.join(argv)}` does not parse with Ray's CLI: {exc}")
    elif prog in ("wget", "pg_isready", "/bin/sh", "sh"):
        pass  # not ours; the images provide them
    else:
        pytest.fail(f"{where}: unknown program {prog!r}; teach this test to parse it")


def test_parser_catches_a_wrong_option() -> None:
    # the dataset is a positional argument; the old manifest's --dataset never existed
    with pytest.raises(DoesNotParse, match="--dataset"):
        parse(typer.main.get_command(app), "earmark", ["train", "dpo", "--dataset", "round-0"])
    with pytest.raises(DoesNotParse, match="no-such-flag"):
        parse(_ray_cli(), "ray", ["start", "--head", "--no-such-flag"])


def _image_ray_version() -> str:
    args = dict(
        re.match(r"(\w+)=(.*)", rest).groups() for w, rest in _dockerfile_instructions() if w == "ARG" and "=" in rest
    )
    assert "${RAY_VERSION}" in args["RAY_EXTRAS"] and "==" in args["RAY_EXTRAS"], "the image must pin Ray exactly"
    return args["RAY_VERSION"].strip('"')


def test_image_ray_matches_manifests_and_pyproject() -> None:
    image = _image_ray_version()
    versions = {
        (str(p.relative_to(REPO)), (d.get("spec") or {}).get("rayClusterSpec", d.get("spec", {})).get("rayVersion"))
        for p in MANIFESTS
        for d in _docs(p)
        if d.get("kind") in ("RayCluster", "RayJob") and "clusterSelector" not in d.get("spec", {})
    }
    assert versions and all(v == image for _, v in versions), (image, versions)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["cluster"] == [f"ray[default,train]=={image}"]


def test_autoscaler_is_v2() -> None:
    (cluster,) = [d for d in _docs(INFRA / "k8s" / "40-raycluster.yaml") if d.get("kind") == "RayCluster"]
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    assert cluster["spec"]["autoscalerOptions"]["version"] == "v2"
