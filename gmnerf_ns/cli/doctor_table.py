"""gmnerf-doctor's report: one :class:`Check` per row, printed as a table with the errors and the overlay folder
repeated unwrapped below it and a one-line verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Literal, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

Status = Literal["ok", "info", "warn", "error"]
STYLES = {"ok": "green", "info": "cyan", "warn": "yellow", "error": "bold red"}


@dataclass
class Check:
    """One row of the report."""

    area: str
    item: str
    status: Status
    detail: str


def summarise(area: str, item: str, problems: List[str], total: int, what: str) -> Check:
    """One row for ``total`` checked items: ok, or an error counting the problems and naming the first three."""
    if not problems:
        return Check(area, item, "ok", f"{total} {what} checked")
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    return Check(area, item, "error", f"{len(problems)} of {total} {what} failed: {shown}")


def render(rows: List[Check], console: Optional[Console] = None) -> None:
    """Prints the table, then each error and the overlay folder unwrapped, then the verdict."""
    table = Table(title="gmnerf-doctor", show_lines=False)
    for name in ("area", "item", "status", "details"):
        table.add_column(name, overflow="fold")
    for row in rows:
        style = STYLES[row.status]
        table.add_row(row.area, row.item, f"[{style}]{row.status}[/{style}]", escape(row.detail))
    console = console or Console()
    console.print(table)
    for row in rows:  # unwrapped, so they can be copied and searched
        if row.status == "error":
            console.print(f"[bold red]error[/bold red] {escape(row.item)}: {escape(row.detail)}", soft_wrap=True)
    for row in rows:  # where the pictures are, unwrapped
        if row.item == "overlays" and row.status == "info":
            console.print(f"overlays: {escape(row.detail)}", soft_wrap=True)
    errors = sum(r.status == "error" for r in rows)
    warns = sum(r.status == "warn" for r in rows)
    verdict = "[bold red]errors found[/bold red]" if errors else "[green]ready[/green]"
    console.print(f"{verdict}: {errors} error(s), {warns} warning(s)")
