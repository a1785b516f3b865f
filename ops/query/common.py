"""What the query commands share: turning client errors into advice, the console."""

from __future__ import annotations

import sys
from typing import Any

from crossfeed.client.exceptions import BadRequestError, ConnectionFailedError, NotFoundError
from crossfeed.exceptions import CrossfeedError


def explain(exc: CrossfeedError, url: str) -> CrossfeedError:
    """The error with what a person needs to fix it."""
    if isinstance(exc, BadRequestError) and exc.details:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in d.get('loc', ())[1:]) or 'request'}: {d.get('msg')}"
            for d in exc.details
            if isinstance(d, dict)
        )
        return CrossfeedError(f"{exc.message}: {problems}")
    if isinstance(exc, ConnectionFailedError):
        return CrossfeedError(
            f"{exc.message} (is the API running, e.g. `crossfeed serve`? "
            "set --url or CROSSFEED_API_URL)"
        )
    if isinstance(exc, NotFoundError):
        return CrossfeedError(exc.message)
    return exc


def console_for_output() -> Any:
    from rich.console import Console

    # Wide enough for the table when piped (rich assumes 80 columns without a terminal).
    return Console(width=None if sys.stdout.isatty() else 160)
