"""`earmark ui` (the Streamlit annotation app) and `earmark users ...`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from earmark.cli.common import connect, console, handle_errors, settings

users_app = typer.Typer(help="Annotation app accounts (argon2-hashed passwords, roles).", no_args_is_help=True)


def app_path() -> Path:
    import annotation_ui

    return Path(annotation_ui.__file__).parent / "app.py"


@handle_errors
def ui(
    port: int = typer.Option(8501, min=1024, max=65535, help="Port to serve on."),
    address: str = typer.Option("127.0.0.1", help="Bind address; 0.0.0.0 only behind a TLS proxy."),
) -> None:
    """Start the annotation app (rater, reviewer, admin and dashboard pages) on the configured store."""
    cfg = settings()
    env = dict(os.environ)
    if cfg.database_url is None:
        # Resolve the embedded store once so the app's sessions attach to the same server.
        from earmark.store.engine import resolve_database_url

        env["EARMARK_DATABASE_URL"] = resolve_database_url(cfg)
        # still the embedded store: the app migrates it on connect as every other command does
        env.setdefault("EARMARK_AUTO_MIGRATE", "1" if cfg.migrates_on_connect() else "0")
    env["EARMARK_HOME"] = str(cfg.home_dir)
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path()),
        "--server.headless",
        "true",
        "--server.address",
        address,
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "minimal",
    ]
    console.print(f"annotation app on http://{address}:{port} (Ctrl-C to stop)")
    raise typer.Exit(subprocess.call(cmd, env=env))


@users_app.command("add")
@handle_errors
def users_add(
    username: str = typer.Argument(..., help="Login name."),
    role: str = typer.Option("rater", help="rater, reviewer or admin."),
    password: str = typer.Option(
        ...,
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        help="At least 8 characters (prompted, never echoed).",
    ),
) -> None:
    """Create an account."""
    from earmark.domain.enums import Role
    from earmark.security import Principal

    em = connect().as_principal(Principal(None, "cli-admin", Role.admin))
    info = em.users.create(username, password, role)
    console.print(f"user {info.username} ({info.role}) created")


@users_app.command("list")
@handle_errors
def users_list() -> None:
    """List accounts and their roles."""
    from rich.table import Table

    from earmark.domain.enums import Role
    from earmark.security import Principal

    em = connect().as_principal(Principal(None, "cli-admin", Role.admin))
    table = Table("id", "username", "role", "active", "cleared")
    for u in em.users.list():
        table.add_row(str(u.id), u.username, u.role.value, str(u.active), str(u.cleared_for_aggregation))
    console.print(table)
