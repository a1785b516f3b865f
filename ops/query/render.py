"""Readable terminal output of search pages and posts (rich tables)."""

from __future__ import annotations

from datetime import datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from crossfeed.api.models import PostResponse, SearchResponse, SearchResult

TEXT_CHARS = 80


def _short(text: str, limit: int = TEXT_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M")


def _kind(result: SearchResult) -> str:
    if result.moment is not None:
        return f"{result.modality} {result.moment.start_s:g}-{result.moment.end_s:g}s"
    return str(result.modality)


def results_table(results: list[SearchResult], *, start: int = 1) -> Table:
    table = Table(show_edge=False, pad_edge=False, expand=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("score", justify="right")
    table.add_column("post", overflow="fold", max_width=36)
    table.add_column("match")
    table.add_column("author", overflow="fold", max_width=28)
    table.add_column("source")
    table.add_column("posted")
    table.add_column("text / tags", overflow="fold", min_width=24)
    for n, r in enumerate(results, start=start):
        tags = " ".join(f"#{t.replace(' ', '_')}" for t in r.tags)
        suggested = " ".join(f"~{t.replace(' ', '_')}" for t in r.suggested_tags)
        body = _short(r.text) or (r.media_ref or "")
        extra = " ".join(x for x in (tags, suggested) if x)
        # Posts are untrusted text: escaped, so "[red]" in a post is printed, not obeyed.
        table.add_row(
            str(n),
            f"{r.score:.3f}",
            escape(r.id),
            _kind(r),
            escape(r.author or "-"),
            escape(r.source or "-"),
            _when(r.created_at),
            f"{escape(body)}\n[dim]{escape(extra)}[/dim]" if extra else escape(body),
        )
    return table


def print_page(console: Console, page: SearchResponse, *, start: int = 1) -> None:
    if not page.results:
        console.print("no results")
    else:
        console.print(results_table(page.results, start=start))
    status = "cached" if page.cached else f"{page.took_ms:.1f} ms"
    console.print(
        f"[dim]{len(page.results)} results · {page.query} query · model {page.model_version} · "
        f"epoch {page.epoch} · {status}[/dim]",
        highlight=False,
    )


def print_post(console: Console, post: PostResponse) -> None:
    console.print(f"[bold]{escape(post.id)}[/bold]", highlight=False)
    console.print(
        f"by {post.author or '-'} on {post.source or '-'} · {_when(post.created_at)} · "
        f"lang {post.lang or '-'}",
        highlight=False,
        markup=False,
    )
    if post.text:
        console.print(post.text, highlight=False, markup=False)
    if post.tags:
        tags = " ".join(f"#{t.replace(' ', '_')}" for t in post.tags)
        console.print(tags, highlight=False, markup=False)
    table = Table(show_edge=False, pad_edge=False)
    for name in ("item", "kind", "media", "suggested tags", "model"):
        table.add_column(name, overflow="fold")
    for item in post.items:
        kind = str(item.modality)
        if item.moment is not None:
            kind += f" {item.moment.start_s:g}-{item.moment.end_s:g}s"
        table.add_row(
            str(item.item),
            kind,
            escape(item.media_ref or "-"),
            escape(", ".join(item.suggested_tags) or "-"),
            escape(item.model_version),
        )
    console.print(table)
