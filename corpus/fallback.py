"""A small drawn image set, used when no clipart tree is installed.

It mimics the clipart layout (``<top>/<sub>/<colour>_<shape>_NN.png``) so the rest of
the corpus builder treats both the same way. Pictures are drawn with PIL from a
seeded RNG: the same seed gives the same files.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

from crossfeed.exceptions import InvalidInputError

_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "blue": (40, 80, 220),
    "green": (40, 170, 70),
    "orange": (245, 140, 20),
    "purple": (140, 60, 180),
    "yellow": (240, 210, 30),
    "black": (20, 20, 20),
}

Box = tuple[float, float, float, float]


def _circle(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    draw.ellipse(box, fill=colour, outline=(0, 0, 0), width=2)


def _square(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    draw.rectangle(box, fill=colour, outline=(0, 0, 0), width=2)


def _triangle(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour, outline=(0, 0, 0))


def _star(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    points = []
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.45
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    draw.polygon(points, fill=colour, outline=(0, 0, 0))


def _arrow(draw: ImageDraw.ImageDraw, box: Box, colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    h = y1 - y0
    mid = x0 + (x1 - x0) * 0.55
    draw.polygon(
        [
            (x0, y0 + h * 0.35),
            (mid, y0 + h * 0.35),
            (mid, y0),
            (x1, y0 + h / 2),
            (mid, y1),
            (mid, y0 + h * 0.65),
            (x0, y0 + h * 0.65),
        ],
        fill=colour,
        outline=(0, 0, 0),
    )


# category path -> (shape word used in file names, drawing function)
_CATEGORIES: dict[
    str, tuple[str, Callable[[ImageDraw.ImageDraw, Box, tuple[int, int, int]], None]]
] = {
    "shapes/circles": ("circle", _circle),
    "shapes/squares": ("square", _square),
    "shapes/triangles": ("triangle", _triangle),
    "symbols/arrows": ("arrow", _arrow),
    "symbols/stars": ("star", _star),
}


def generate_images(dest: Path, *, seed: int, per_category: int = 12, size: int = 128) -> Path:
    """Draw ``per_category`` PNGs in each of five categories under ``dest``; return ``dest``."""
    if per_category < 1 or per_category > 1000:
        raise InvalidInputError("per_category must be between 1 and 1000")
    rng = random.Random(f"fallback:{seed}")
    dest.mkdir(parents=True, exist_ok=True)
    colour_names = sorted(_COLOURS)
    for category, (shape, draw_fn) in _CATEGORIES.items():
        folder = dest / category
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(1, per_category + 1):
            colour = rng.choice(colour_names)
            img = Image.new("RGBA", (size, size), (255, 255, 255, 0))
            draw = ImageDraw.Draw(img)
            extent = rng.uniform(0.45, 0.9) * size
            x0 = rng.uniform(0, size - extent)
            y0 = rng.uniform(0, size - extent)
            draw_fn(draw, (x0, y0, x0 + extent, y0 + extent), _COLOURS[colour])
            img.save(folder / f"{colour}_{shape}_{n:02d}.png")
    return dest
