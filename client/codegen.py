"""Generate the sync client from the async one (``python -m crossfeed.client.codegen``).

``_async/client.py`` and ``_async/events.py`` are the source; unasync rewrites their
tokens (``async def`` -> ``def``, ``await x`` -> ``x``, ``httpx.AsyncClient`` ->
``httpx.Client``...) into ``_sync/``, then ruff formats the result. ``--check`` exits 1
when a generated file is out of date (a test runs it, so the two cannot drift).
Needs the dev extras (``unasync``, ``ruff``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = ("client.py", "events.py")
HEADER = (
    "# Generated from crossfeed/client/_async/{name} by `python -m crossfeed.client.codegen`.\n"
    "# Do not edit: change the async file and run the generator again.\n"
)
# Token renames beyond unasync's defaults (__aenter__, AsyncIterator, ...).
REPLACEMENTS = {
    "AsyncClient": "Client",
    "AsyncBaseTransport": "BaseTransport",
    "aclose": "close",
    "aread": "read",
    "aiter_sse": "iter_sse",
    "_async": "_sync",
}
# Prose in docstrings that token renames cannot reach.
TEXT_REPLACEMENTS = (
    ("``async with AsyncClient() as client: ...``", "``with Client() as client: ...``"),
    ("leaving ``async with``", "leaving ``with``"),
    (
        "The asynchronous crossfeed client, :class:`~crossfeed.client.AsyncClient`.\n\n"
        "Written by hand. The synchronous client is generated from this file by",
        "The synchronous crossfeed client, :class:`~crossfeed.client.Client`.\n\n"
        "Generated from ``_async/client.py`` (the asynchronous client) by",
    ),
    ("Generated into ``_sync/events.py`` for the sync client; edit", "Generated from"),
    ("this file, then run", "``_async/events.py``: edit that file, then run"),
)


def generate(name: str) -> str:
    """The sync version of ``_async/<name>``, formatted."""
    import unasync

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "_async" / name
        src.parent.mkdir()
        shutil.copy(HERE / "_async" / name, src)
        rule = unasync.Rule("/_async/", "/_sync/", additional_replacements=REPLACEMENTS)
        unasync.unasync_files([str(src)], [rule])
        text = (Path(tmp) / "_sync" / name).read_text(encoding="utf-8")
    for old, new in TEXT_REPLACEMENTS:
        text = text.replace(old, new)
    text = HEADER.format(name=name) + text
    ruff = Path(sys.executable).with_name("ruff")
    exe = str(ruff if ruff.exists() else "ruff")
    target = str(HERE / "_sync" / name)  # so the project's ruff settings apply
    for command in (
        [exe, "check", "--fix", "--select", "I", "--quiet", "--stdin-filename", target, "-"],
        [exe, "format", "--quiet", "--stdin-filename", target, "-"],
    ):
        text = subprocess.run(
            command, input=text, capture_output=True, text=True, check=True
        ).stdout
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if _sync/ is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name in SOURCES:
        target = HERE / "_sync" / name
        text = generate(name)
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target}")
    if args.check and stale:
        print(f"out of date: {', '.join('_sync/' + n for n in stale)}; run the generator")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
