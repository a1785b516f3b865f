"""``crossfeed collections`` against the real Milvus: listing per-version collections, dropping."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from crossfeed.core.settings import MilvusSettings
from crossfeed.indexer.base import IndexRow
from crossfeed.indexer.collections import drop_collection, ours
from crossfeed.indexer.exceptions import CollectionRefusedError
from crossfeed.indexer.milvus import MilvusIndex
from crossfeed.ops.cli import main

pytestmark = pytest.mark.integration


def _rows(n: int, dim: int, version: str) -> list[IndexRow]:
    rng = np.random.default_rng(dim)
    return [
        IndexRow(
            row_id=f"p{i}:text:0",
            post_id=f"p{i}",
            item=0,
            modality="text",
            vector=(v / np.linalg.norm(v)).tolist(),
            created_at_ms=0,
            author="a",
            text="t",
            tags=(),
            lang="en",
            model_version=version,
            media_ref="",
        )
        for i, v in enumerate(rng.standard_normal((n, dim)))
    ]


@pytest.fixture
def base(
    engines: object, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    name = unique_name("colls")
    monkeypatch.setenv("CROSSFEED_COLLECTION", name)
    made = []
    for collection, dim, version, n in ((name, 8, "v1", 5), (f"{name}__v2", 12, "v2", 3)):
        index = MilvusIndex(
            MilvusSettings(CROSSFEED_COLLECTION=collection), consistency_level="Strong"
        )
        index.ensure_ready(dim)
        index.upsert(_rows(n, dim, version))
        index.close()
        made.append(collection)
    yield name
    for collection in made:
        index = MilvusIndex(MilvusSettings(CROSSFEED_COLLECTION=collection))
        index.drop()
        index.close()


def test_lists_the_versions_and_drops_only_old_ones(
    base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["collections", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["serving"] == base
    got = {c["name"]: c for c in listed["collections"]}
    assert set(got) == {base, f"{base}__v2"}  # nobody else's collections
    assert (got[base]["dim"], got[base]["versions"], got[base]["serving"]) == (8, ["v1"], True)
    assert (got[f"{base}__v2"]["dim"], got[f"{base}__v2"]["versions"]) == (12, ["v2"])

    assert main(["collections", "--drop", f"{base}__v2"]) == 2  # needs --yes
    with pytest.raises(CollectionRefusedError, match="serve"):
        drop_collection(MilvusSettings(CROSSFEED_COLLECTION=base), base)
    with pytest.raises(CollectionRefusedError, match="not a collection of"):
        drop_collection(MilvusSettings(CROSSFEED_COLLECTION=base), "someone_else")
    assert main(["collections", "--drop", f"{base}__v2", "--yes"]) == 0
    capsys.readouterr()
    assert main(["collections", "--json"]) == 0
    assert [c["name"] for c in json.loads(capsys.readouterr().out)["collections"]] == [base]


def test_only_the_base_and_its_versions_are_ours() -> None:
    assert ours("posts", "posts") and ours("posts__v2", "posts")
    assert not ours("posts2", "posts") and not ours("other__posts", "posts")
