"""Source images for the sample corpus: a scan of an openclipart-style PNG tree.

The tree is ``<root>/<top category>/<sub category>/.../<name>.png`` (Debian's
``openclipart-png`` installs one under ``/usr/share/openclipart/png``). The
package links about 1,200 files into a second category; keeping those (or any
byte-identical copy) would put the same picture in two categories and leak it
across a train/test split, so symlinks and duplicate contents are skipped.

File names carry the subject first and the author after it, truncated
(``full_moon_dan_gerhards_01.png``); :func:`subject_words` keeps the words before
the first author-like word so that generated captions talk about the picture.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from crossfeed.exceptions import InvalidInputError

log = logging.getLogger(__name__)

DEFAULT_CLIPART_ROOT = Path("/usr/share/openclipart/png")

# Author names (and their truncations) that openclipart appends to file names. Found by
# listing words that occur in many unrelated top categories of the Debian package.
_AUTHOR_WORDS = frozenset(
    """
    architetto francesco rollandin ganson benji park nicu buculei gerald juliane krug jean
    victor jarno vasamaa linda kim lumen fudriot peterm mimooh jon jonathan phillips dan
    gerhards gerhard matthew dave frouke anthony luiz sergio balin marcelo mauro olivo petri
    mike martin costea daniel nurbldoff liekens james jakob charles bogdan alex kuehne rory
    mccann kurt cagle michael joel jonadab
    """.split()  # noqa: SIM905 - a word list reads better as text
)
_STOP_WORDS = frozenset("and the with for from con del della png svg clipart clip art".split())  # noqa: SIM905
# Irregular or awkward plurals among the category names.
_SINGULAR = {
    "people": "person",
    "stickmen": "stickman",
    "smilies": "smiley",
    "glasses": "glasses",
    "bugs": "bug",
    "series": "series",
}
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_NON_LETTERS = re.compile(r"[^a-z]+")


@dataclass(frozen=True)
class SourceImage:
    """One usable picture: where it is, what it shows (its category), how big it is."""

    path: Path  # absolute, resolved
    rel: str  # posix path relative to the scanned root
    category_path: str  # e.g. "animals/birds"
    top_category: str  # e.g. "animals"
    sha256: str
    size_bytes: int
    width: int
    height: int
    subject: tuple[str, ...]  # words naming what the picture shows, e.g. ("blue", "jay")


@dataclass
class ScanResult:
    """The usable images of a tree, plus what was skipped and why (for the manifest)."""

    root: Path
    images: list[SourceImage] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def categories(self) -> list[str]:
        return sorted({img.category_path for img in self.images})


def _words(text: str) -> list[str]:
    return [w for w in _NON_LETTERS.split(_CAMEL.sub(" ", text).lower()) if w]


def _is_author(word: str) -> bool:
    if word in _AUTHOR_WORDS:
        return True
    # Truncated names ("archite", "franc"); short prefixes are too often real words.
    return len(word) >= 4 and any(name.startswith(word) for name in _AUTHOR_WORDS)


def subject_words(stem: str, max_words: int = 3) -> tuple[str, ...]:
    """The leading descriptive words of a file stem, stopping at the author's name."""
    out: list[str] = []
    for word in _words(stem):
        if _is_author(word):
            break
        if len(word) < 3 or word in _STOP_WORDS:
            continue
        out.append(word)
        if len(out) == max_words:
            break
    return tuple(out)


def singular(word: str) -> str:
    """A crude English singular, good enough for category names ("birds" -> "bird")."""
    if word in _SINGULAR:
        return _SINGULAR[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def category_words(category_path: str) -> list[str]:
    """Descriptive words of a category path ("signs_and_symbols/flags" -> signs symbols flags)."""
    return [w for w in _words(category_path.replace("/", " ")) if w not in _STOP_WORDS]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def scan_images(
    root: Path,
    *,
    max_pixels: int = 40_000_000,
    max_bytes: int = 20 * 1024 * 1024,
    on_file: Callable[[], None] | None = None,
) -> ScanResult:
    """Walk ``root`` (never following links) and return its usable PNGs, in path order.

    Skipped, and counted under ``skipped``: symlinks (``symlink``), byte-identical copies
    of an earlier file (``duplicate``), files PIL cannot identify (``unreadable``), and
    files over ``max_bytes`` or ``max_pixels`` (``too_large``; the embed workers would
    reject them). Images directly under the root get the category ``uncategorized``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InvalidInputError(f"image root {root} is not a directory")
    root = root.resolve()
    result = ScanResult(root=root)
    seen: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in list(dirnames):
            if (base / name).is_symlink():
                result.skipped["symlink"] += 1
        dirnames[:] = sorted(d for d in dirnames if not (base / d).is_symlink())
        for name in sorted(filenames):
            if not name.lower().endswith(".png"):
                continue
            if on_file is not None:
                on_file()
            path = base / name
            if path.is_symlink():
                result.skipped["symlink"] += 1
                continue
            if not path.is_file():
                result.skipped["not_a_file"] += 1
                continue
            size = path.stat().st_size
            if size > max_bytes:
                result.skipped["too_large"] += 1
                continue
            digest = _sha256(path)
            rel = path.relative_to(root).as_posix()
            if digest in seen:
                log.debug("skipping %s: same content as %s", rel, seen[digest])
                result.skipped["duplicate"] += 1
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    with Image.open(path) as img:
                        width, height = img.size
            except Image.DecompressionBombError:
                result.skipped["too_large"] += 1
                continue
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                log.debug("skipping %s: %s", rel, exc)
                result.skipped["unreadable"] += 1
                continue
            if width * height > max_pixels or width < 1 or height < 1:
                result.skipped["too_large"] += 1
                continue
            seen[digest] = rel
            parent = Path(rel).parent.as_posix()
            category = "uncategorized" if parent == "." else parent
            result.images.append(
                SourceImage(
                    path=path,
                    rel=rel,
                    category_path=category,
                    top_category=category.split("/", 1)[0],
                    sha256=digest,
                    size_bytes=size,
                    width=width,
                    height=height,
                    subject=subject_words(Path(name).stem),
                )
            )
    return result
