"""infra/Dockerfile checked without a container engine: pins agree with pyproject.toml, torch is
installed before the project, the image runs as a non-root user and holds no secrets, and the
files it COPYs are enough to build the earmark wheel with everything the image needs at run time."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "infra" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _args() -> dict[str, str]:
    return dict(
        re.match(r"(\w+)=(.*)", rest).groups() for word, rest in _instructions() if word == "ARG" and "=" in rest
    )


def test_pins_match_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    worker = project["optional-dependencies"]["worker"]
    assert not any(d.startswith(("torch", "ray")) for d in project["dependencies"])  # the app image has neither
    torch_pin = next(d for d in worker if d.startswith("torch"))
    args = _args()
    assert torch_pin == f"torch=={args['TORCH_VERSION']}"
    assert args["TORCH_INDEX_URL"].endswith("/cpu")  # the default image is the CPU build
    assert project["requires-python"].startswith(">=3.11") and args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    from packaging.requirements import Requirement

    ray_pin = Requirement(next(d for d in worker if d.startswith("ray")))
    assert args["RAY_VERSION"] in ray_pin.specifier  # the image's exact Ray is inside the project's range
    assert args["RAY_EXTRAS"].strip('"') == "ray[default,train]==${RAY_VERSION}"


def _stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per named build stage (FROM ... AS name)."""
    out: dict[str, list[tuple[str, str]]] = {}
    name = ""
    for word, rest in _instructions():
        if word == "FROM":
            name = rest.split()[-1] if " AS " in rest.upper() else rest
            out[name] = []
        elif name:
            out[name].append((word, rest))
    return out


def test_torch_before_project_and_non_root() -> None:
    stages = _stages()
    assert list(stages)[-1] == "worker"  # a plain `docker build` gives the worker image
    runs = [rest for word, rest in stages["worker"] if word == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if '"torch==${TORCH_VERSION}"' in r)
    project_at = next(i for i, r in enumerate(runs) if 'pip install ".[worker]"' in r)
    assert torch_at < project_at and "--index-url" in runs[torch_at]
    for name in ("app", "worker"):
        users = [rest for word, rest in stages[name] if word == "USER"]
        assert users and users[-1] not in ("root", "0"), name
        assert any(w == "ENTRYPOINT" and "tini" in r for w, r in stages[name]), name


def test_app_image_has_no_torch_or_ray() -> None:
    runs = " ".join(rest for word, rest in _stages()["app"] if word == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs)  # the core only: no extras
    assert "torch==" not in runs and "RAY_EXTRAS" not in runs and "[worker]" not in runs


def test_no_secrets_in_image() -> None:
    for word, rest in _instructions():
        if word in ("ENV", "ARG"):
            assert not re.search(r"(PASSWORD|SECRET|ACCESS_KEY|TOKEN|DATABASE_URL)\w*=", rest, re.IGNORECASE), rest


def test_copied_files_build_a_complete_wheel(tmp_path: Path) -> None:
    """Exactly the COPY sources, built like `pip install .` does in the image."""
    sources = [src for word, rest in _instructions() if word == "COPY" for src in rest.split()[:-1]]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for src in sources:
        path = REPO / src
        assert path.exists(), f"COPY {src}: missing from the repository"
        if path.is_dir():
            shutil.copytree(path, ctx / src, ignore=ignore)
        else:
            shutil.copy2(path, ctx / src)
    dockerignore = (REPO / "infra" / "Dockerfile.dockerignore").read_text().split()
    for src in sources:
        assert f"!{src}" in dockerignore or f"!{src}/" in dockerignore, f"{src} is excluded from the build context"
    pytest.importorskip("hatchling")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ctx),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    wheel = next((tmp_path / "dist").glob("earmark-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "earmark/cli/main.py",
        "earmark/store/migrations/env.py",
        "pipelines/rollout_job.py",
        "annotation_ui/app.py",
        "reward_models/base.py",
        "pipelines/data/personas.json",
    ):
        assert needed in names, f"{needed} is not in the image's wheel"
    assert any(n.startswith("pipelines/data/offline-speech-policy-v0/") for n in names)  # bundled checkpoint
    assert any(n.startswith("earmark/store/migrations/versions/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "earmark = earmark.cli.main:app" in zipfile.ZipFile(wheel).read(entry_points).decode()
