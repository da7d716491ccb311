"""`earmark campaign open|list|progress|close`: annotation campaigns from the command line."""

from __future__ import annotations

import typer
from rich.table import Table

from earmark.cli.common import connect, console, handle_errors

campaign_app = typer.Typer(help="Annotation campaigns (which rollouts, protocol, overlap).", no_args_is_help=True)


@campaign_app.command("open")
@handle_errors
def campaign_open(
    name: str = typer.Argument(..., help="Campaign name (letters, digits, space, _ . -)."),
    policy: list[str] = typer.Option(
        [], "--policy", "-p", help="NAME or NAME:VERSION whose rollouts to compare (repeatable); all when omitted."
    ),
    protocol: str = typer.Option(None, help="pairwise, mos, cmos, mushra or timeline (default pairwise)."),
    preset: str = typer.Option(None, help="Regime preset filling protocol, dimensions, overlap, instructions."),
    overlap: int = typer.Option(None, min=1, max=50, help="Raters per item (k); default 3."),
    gold_ratio: float = typer.Option(None, min=0.0, max=0.5, help="Share of planted gold items; default 0.1."),
    max_items: int = typer.Option(200, min=1, help="Most comparisons to plan."),
    round: list[int] = typer.Option([], "--round", help="Only rollouts of these loop rounds (repeatable)."),
    seed: int = typer.Option(0, help="Seed for pair selection."),
) -> None:
    """Open a campaign over stored rollouts; raters then judge it in `earmark ui`."""
    from earmark.services.campaigns import CampaignCreate

    em = connect()
    ids = []
    for p in policy:
        pname, _, ver = p.partition(":")
        ids.append(em.catalog.policy(pname, int(ver) if ver else None).id)
    fields = {
        "protocol": protocol,
        "preset": preset,
        "overlap": overlap,
        "gold_ratio": gold_ratio,
        "policy_ids": ids or None,
        "rounds": round or None,
    }
    spec = CampaignCreate(name=name, max_items=max_items, seed=seed, **{k: v for k, v in fields.items() if v})
    camp = em.campaigns.create(spec)
    prog = em.campaigns.progress(camp.id)
    console.print(
        f"campaign {camp.id} {camp.name!r} open: {prog.items} items, {prog.tasks} tasks "
        f"({camp.protocol}, overlap {camp.overlap}); judge it in `earmark ui`"
    )


@campaign_app.command("list")
@handle_errors
def campaign_list(status: str = typer.Option(None, help="Only campaigns in this status (draft/open/closed).")) -> None:
    """List campaigns with their progress."""
    em = connect()
    table = Table("id", "name", "protocol", "status", "items", "done/tasks")
    for c in em.campaigns.list(status):
        p = em.campaigns.progress(c.id)
        table.add_row(str(c.id), c.name, c.protocol, c.status, str(p.items), f"{p.done}/{p.tasks}")
    console.print(table)


@campaign_app.command("close")
@handle_errors
def campaign_close(campaign_id: int = typer.Argument(..., help="Campaign id (see `earmark campaign list`).")) -> None:
    """Close a campaign: no more tasks are handed out."""
    from earmark.domain.enums import CampaignStatus

    connect().campaigns.set_status(campaign_id, CampaignStatus.closed)
    console.print(f"campaign {campaign_id} closed")
