"""The stream's optional translation step: suggested tags for media of untagged posts."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from PIL import Image

from crossfeed.core.schema import CleanPost, Post
from crossfeed.core.settings import KafkaSettings, Settings, StreamSettings
from crossfeed.encoders.testing import HashingEmbedder
from crossfeed.indexer.base import Hit, IndexRow, SearchFilter
from crossfeed.indexer.exceptions import IndexUnavailableError
from crossfeed.indexer.memory import InMemoryIndex
from crossfeed.streams.metrics import WorkerMetrics
from crossfeed.streams.suggest import SuggestConfig, TagSuggestStep
from crossfeed.streams.testing import RecordingPublisher

TOPICS = KafkaSettings()
RED, BLUE = (220, 20, 20), (20, 20, 220)


def _image(color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (16, 16), color)


def _png(color: tuple[int, int, int]) -> str:
    import base64

    buf = io.BytesIO()
    _image(color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _row(post_id: str, vector: Sequence[float], tags: Sequence[str], version: str) -> IndexRow:
    return IndexRow(
        row_id=f"{post_id}:image:1",
        post_id=post_id,
        item=1,
        modality="image",
        vector=list(vector),
        created_at_ms=0,
        author="a",
        text="",
        tags=tuple(tags),
        lang="",
        model_version=version,
        media_ref="",
    )


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder(dim=16)


@pytest.fixture
def index(embedder: HashingEmbedder) -> InMemoryIndex:
    """Red images tagged #sunset, blue ones #ocean; one row of another model version."""
    red = embedder.embed_images([_image(RED)])[0]
    blue = embedder.embed_images([_image(BLUE)])[0]
    idx = InMemoryIndex(dim=16)
    idx.upsert(
        [_row(f"red{i}", red, ["sunset", "sky"], embedder.version) for i in range(3)]
        + [_row(f"blue{i}", blue, ["ocean"], embedder.version) for i in range(3)]
        + [_row("old", red, ["stale"], "older-version")]
    )
    return idx


def test_suggests_the_neighbours_tags_only_from_the_same_version(
    embedder: HashingEmbedder, index: InMemoryIndex
) -> None:
    metrics = WorkerMetrics()
    step = TagSuggestStep(index, metrics, SuggestConfig(neighbours=3))
    vector = embedder.embed_images([_image((230, 30, 25))])[0].tolist()
    tags = step.suggest(vector, post_id="new", modality="image", model_version=embedder.version)
    assert tags[:2] == ["sky", "sunset"] or tags[:2] == ["sunset", "sky"]
    assert "stale" not in tags and "ocean" not in tags
    assert (
        metrics.registry.get_sample_value("crossfeed_tags_suggested_total", {"modality": "image"})
        == 1
    )


def test_min_score_drops_weakly_backed_tags(embedder: HashingEmbedder) -> None:
    vec = embedder.embed_images([_image(RED)])[0]
    idx = InMemoryIndex(dim=16)
    # Ten equally close neighbours: "common" on all, each "rareN" on one (a 0.1 share).
    idx.upsert([_row(f"p{i}", vec, ["common", f"rare{i}"], embedder.version) for i in range(10)])
    loose = TagSuggestStep(idx, WorkerMetrics(), SuggestConfig(neighbours=10, min_score=0.0))
    strict = TagSuggestStep(idx, WorkerMetrics(), SuggestConfig(neighbours=10, min_score=0.2))
    args: dict[str, Any] = {"post_id": "x", "modality": "image", "model_version": embedder.version}
    assert len(loose.suggest(vec.tolist(), **args)) == 5
    assert strict.suggest(vec.tolist(), **args) == ["common"]


def test_posterior_restricts_to_the_head_vocabulary(
    embedder: HashingEmbedder, index: InMemoryIndex
) -> None:
    step = TagSuggestStep(index, WorkerMetrics(), SuggestConfig(neighbours=3, min_score=0.0))
    vector = embedder.embed_images([_image(RED)])[0].tolist()
    tags = step.suggest(
        vector,
        post_id="new",
        modality="image",
        model_version=embedder.version,
        posterior={"sunset": 0.9, "dog": 0.8},
    )
    assert tags[0] == "sunset" and "sky" not in tags  # "sky" is not in the head's vocabulary
    assert "dog" in tags  # the posterior knows tags no neighbour carries


class _DownIndex(InMemoryIndex):
    def __init__(self) -> None:
        super().__init__(dim=16)
        self.searches = 0

    def search(self, vector: Sequence[float], top_k: int, flt: SearchFilter) -> list[Hit]:
        self.searches += 1
        raise IndexUnavailableError("milvus is down")


def test_index_failure_costs_only_the_suggestion_and_pauses() -> None:
    now = [100.0]
    down = _DownIndex()
    step = TagSuggestStep(down, WorkerMetrics(), SuggestConfig(pause_s=30), clock=lambda: now[0])
    vec = [1.0] + [0.0] * 15
    args: dict[str, Any] = {"post_id": "x", "modality": "image", "model_version": "v"}
    assert step.suggest(vec, **args) == []
    assert step.suggest(vec, **args) == []  # paused: no second wait on a dead index
    assert down.searches == 1
    now[0] += 31
    assert step.suggest(vec, **args) == []
    assert down.searches == 2


def _clean(post_id: str, hashtags: list[str], media: list[dict[str, Any]], text: str = "") -> bytes:
    post = Post(
        id=post_id,
        source="test",
        author="alice",
        created_at=datetime(2024, 5, 1, tzinfo=UTC),
        text=text,
        tags=hashtags,
        media=media,  # type: ignore[arg-type]
    )
    clean = CleanPost(
        post=post,
        clean_text=text,
        hashtags=hashtags,
        content_hash=post_id,
        received_at=datetime.now(UTC),
    )
    return clean.model_dump_json().encode()


async def test_embed_stage_adds_suggestions_to_untagged_media_only(
    embedder: HashingEmbedder, index: InMemoryIndex, embed_batch: Callable[..., Any]
) -> None:
    metrics = WorkerMetrics()
    published = await embed_batch(
        embedder,
        [
            _clean("untagged", [], [{"kind": "image", "data_base64": _png(RED)}], "look"),
            _clean("tagged", ["beach"], [{"kind": "image", "data_base64": _png(BLUE)}]),
        ],
        metrics=metrics,
        suggester=TagSuggestStep(index, metrics, SuggestConfig(neighbours=3)),
    )
    assert len(published) == 4  # two texts (one from hashtags alone), two images
    records = {(r.post_id, r.modality): r for r in published}
    assert set(records["untagged", "image"].suggested_tags) >= {"sunset", "sky"}
    assert records["untagged", "text"].suggested_tags == []  # text is not translated
    assert records["tagged", "image"].suggested_tags == []  # the author's tags stand
    assert records["untagged", "image"].tags == []  # suggestions never become tags
    # The vector itself is what the plain embedder makes.
    expected = embedder.embed_images([_image(RED)])[0]
    assert np.allclose(records["untagged", "image"].vector, expected, atol=1e-6)


def test_settings_switch_the_step_on_in_the_pipeline() -> None:
    from crossfeed.streams.pipeline import build_pipeline

    settings = Settings()
    settings.stream = StreamSettings(CROSSFEED_SUGGEST_TAGS=True, CROSSFEED_SUGGEST_TOP_K=3)
    pipe = build_pipeline(
        settings,
        stages=("embed",),
        publisher=RecordingPublisher(),
        embedder=HashingEmbedder(dim=16),
        index=InMemoryIndex(dim=16),
    )
    assert pipe.embed is not None
    step = pipe.embed._suggester
    assert step is not None and step.config.top_k == 3
    off = build_pipeline(
        Settings(), stages=("embed",), publisher=RecordingPublisher(), embedder=HashingEmbedder(16)
    )
    assert off.embed is not None and off.embed._suggester is None
    json.dumps(step.config.__dict__)  # a plain, loggable config


async def test_an_injected_index_is_closed_by_its_owner_only() -> None:
    """One index given to the pipeline serves the index stage and the suggest step; neither
    closes it (it belongs to the caller), while indexes they open themselves are closed."""
    from crossfeed.indexer.base import VectorIndex
    from crossfeed.streams.pipeline import build_pipeline

    class Counting(InMemoryIndex):
        closed = 0

        def close(self) -> None:
            Counting.closed += 1

    settings = Settings()
    settings.stream = StreamSettings(CROSSFEED_SUGGEST_TAGS=True)

    class Epoch:
        def bump(self) -> int:
            return 1

    given = Counting(dim=16)
    pipe = build_pipeline(
        settings,
        stages=("embed", "index"),
        publisher=RecordingPublisher(),
        embedder=HashingEmbedder(dim=16),
        index=given,
        epoch=Epoch(),
    )
    await pipe.aclose()
    assert Counting.closed == 0

    made: list[VectorIndex] = []

    def factory() -> VectorIndex:
        made.append(Counting(dim=16))
        return made[-1]

    step = TagSuggestStep(factory, WorkerMetrics(), SuggestConfig(neighbours=3, min_score=0.0))
    step.suggest([1.0] + [0.0] * 15, post_id="p", modality="image", model_version="v")
    step.close()
    step.close()
    assert len(made) == 1 and Counting.closed == 1
