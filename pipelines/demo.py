"""`earmark demo`: the loop on embedded defaults. Grows as the platform's parts land."""
from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from earmark.config import Settings

console = Console()


def run_demo(settings: Settings, rounds: int = 2) -> None:
    import earmark
    from earmark.bundled import seed_starter_data

    t0 = time.monotonic()
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    with console.status("starting the embedded preference store"):
        em = earmark.connect(settings)
    console.print(f"[green]store ready[/] in {time.monotonic() - t0:.1f}s (home {settings.home_dir})")
    console.print(seed_starter_data(em))
    table = Table("what", "count", title="preference store")
    table.add_row("prompts", str(len(em.catalog.prompts())))
    table.add_row("policies", str(len(em.catalog.policies())))
    table.add_row("rollouts", str(em.rollouts.count()))
    table.add_row("reward scores", str(em.scores.count()))
    console.print(table)
    console.print(f"done in {time.monotonic() - t0:.1f}s")
