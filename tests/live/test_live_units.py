"""Small pure parts of live monitoring: reason labels, lag arithmetic, thumbnails, ids."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from crossfeed.live.activity import reason_label
from crossfeed.live.base import check_event_id
from crossfeed.live.exceptions import InvalidEventIdError
from crossfeed.live.lag import UNDER_REPORTS, lag_from_offsets
from crossfeed.live.thumbs import make_thumbnail


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        (
            "malformed JSON: Expecting value: line 1 column 12 (char 11)",
            "malformed JSON: Expecting value",
        ),
        (
            "created_at: Input should be a valid datetime",
            "created_at: Input should be a valid datetime",
        ),
        (
            "media 1 (image, /srv/a.png): image is 9000000 bytes, over the limit",
            "media: image is bytes, over the limit",
        ),
        (
            "media 2 (video, inline:video/mp4): cannot decode video: 'moov' atom not found",
            "media: cannot decode video",
        ),
        ("", "unknown"),
    ],
)
def test_reason_labels_drop_the_per_post_details(reason: str, label: str) -> None:
    assert reason_label(reason) == label


def test_lag_is_end_minus_committed_where_offsets_are_truthful() -> None:
    lag = lag_from_offsets("embed", "t", {0: 10, 1: 5}, {0: 7, 1: 5})
    assert lag.lag == 3 and lag.reason is None


def test_lag_is_unknown_when_the_broker_under_reports_end_offsets() -> None:
    lag = lag_from_offsets("embed", "t", {0: 1, 1: 1}, {0: 5, 1: 5})  # tansu's answer
    assert lag.lag is None and lag.reason == UNDER_REPORTS


def test_lag_is_unknown_before_the_group_committed_anything() -> None:
    assert lag_from_offsets("index", "t", {0: 4}, {}).lag is None
    assert lag_from_offsets("index", "t", {}, {}).reason is not None


def test_thumbnails_respect_the_pixel_and_byte_caps() -> None:
    noise = np.random.default_rng(0).integers(0, 255, (900, 1200, 3), dtype=np.uint8)
    jpeg = make_thumbnail(Image.fromarray(noise), max_px=256, max_bytes=8 * 1024)
    assert len(jpeg) <= 8 * 1024
    thumb = Image.open(io.BytesIO(jpeg))
    assert thumb.format == "JPEG" and max(thumb.size) <= 256


def test_transparent_images_become_opaque_jpegs() -> None:
    jpeg = make_thumbnail(Image.new("RGBA", (40, 20), (255, 0, 0, 0)))
    assert Image.open(io.BytesIO(jpeg)).getpixel((5, 5)) == pytest.approx((255, 255, 255), abs=3)


@pytest.mark.parametrize("value", ["0", "1718000000000-0", "5-12"])
def test_stream_ids_are_accepted(value: str) -> None:
    assert check_event_id(value) == value


@pytest.mark.parametrize("value", ["", "abc", "1-2-3", "-1", "1718000000000", "1 -0", "1-0\n"])
def test_anything_else_is_not_an_event_id(value: str) -> None:
    with pytest.raises(InvalidEventIdError):
        check_event_id(value)
