"""The layout promises: no `platform` package shadowing the standard library."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_platform_folder_is_not_a_package() -> None:
    assert not (REPO / "platform" / "__init__.py").exists(), (
        "platform/__init__.py shadows Python's standard-library `platform` module (torch and ray import it); "
        "delete it: platform/ is a plain folder"
    )


def test_stdlib_platform_still_works_from_repo_root() -> None:
    # `python -c` puts the current directory first on sys.path: the worst case for shadowing.
    code = "import platform; print(platform.system(), platform.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    system, path = out.stdout.split()
    assert system in {"Linux", "Darwin", "Windows"}
    assert not path.startswith(str(REPO / "platform"))


def test_import_earmark_is_light_and_side_effect_free(tmp_path) -> None:
    code = (
        "import sys, earmark, earmark.store.models, earmark.services.catalog, earmark.config;"
        "s = earmark.config.Settings();"
        "print(','.join(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"store/services imported heavy modules: {out.stdout}"
    assert list(tmp_path.iterdir()) == [], "importing earmark must not create files"
