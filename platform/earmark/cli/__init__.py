"""The `earmark` command line (typer)."""
