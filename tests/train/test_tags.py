"""Tag hygiene: normalisation, frequency floor and ceiling, cap, determinism, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crossfeed.core.schema import Post
from crossfeed.encoders.exceptions import HeadVersionError, TrainingError
from crossfeed.encoders.versions import load_vocab_for_version, save_vocab_for_version
from crossfeed.encoders.vocab import TagVocab, TagVocabConfig, clean_tag
from crossfeed.train.tags import post_tags, post_text


def test_spellings_of_one_tag_collapse_and_junk_is_dropped() -> None:
    assert clean_tag("#StarStep") == clean_tag("starstep") == clean_tag("star_step") == "star step"
    assert clean_tag("#1") == "" and clean_tag("x") == "" and clean_tag("2024") == ""


def test_frequency_floor_ceiling_and_cap() -> None:
    posts = (
        [["SunsetBeach", "dog"]] * 4
        + [["sunset_beach", "cat"]] * 3
        + [["everywhere"]] * 0
        + [["typoo"]]
    )
    posts = [[*tags, "everywhere"] for tags in posts]  # on every post: above max_df
    vocab = TagVocab(TagVocabConfig(min_count=3, max_df=0.9)).fit(posts)
    assert vocab.tags == ["sunset beach", "dog", "cat"]  # by count, then alphabetical
    assert vocab.counts == [7, 4, 3]
    assert "typoo" not in vocab and "everywhere" not in vocab
    capped = TagVocab(TagVocabConfig(min_count=1, max_size=2, max_df=1.0)).fit(posts)
    assert capped.tags == ["everywhere", "sunset beach"]


def test_ties_are_broken_alphabetically_whatever_the_input_order() -> None:
    a = TagVocab(TagVocabConfig(min_count=1, max_df=1.0)).fit([["b", "zz"], ["aa", "cc"]])
    b = TagVocab(TagVocabConfig(min_count=1, max_df=1.0)).fit([["cc", "aa"], ["zz", "b"]])
    assert a.tags == b.tags == ["aa", "cc", "zz"]  # "b" is shorter than min_chars


def test_transform_is_multi_hot_over_normalised_tags() -> None:
    vocab = TagVocab(TagVocabConfig(min_count=1, max_df=1.0)).fit([["SunsetBeach", "dog"], ["dog"]])
    y = vocab.transform([["#sunsetbeach", "Dog", "unknown"], []])
    assert y.dtype == np.float32 and y.shape == (2, 2)
    assert y[0].tolist() == [1.0, 1.0] and y[1].tolist() == [0.0, 0.0]
    assert vocab.decode(np.array([0.2, 0.9]), top_k=1) == [("sunset beach", pytest.approx(0.9))]


def test_expand_words_adds_each_word_of_a_phrase() -> None:
    cfg = TagVocabConfig(min_count=1, max_df=1.0, expand_words=True)
    vocab = TagVocab(cfg).fit([["StarStep"], ["star"]])
    assert set(vocab.tags) == {"star step", "star", "step"}
    assert vocab.counts[vocab.tags.index("star")] == 2


def test_fit_refuses_empty_input_and_unfitted_use() -> None:
    with pytest.raises(TrainingError):
        TagVocab().fit([])
    with pytest.raises(TrainingError):
        TagVocab(TagVocabConfig(min_count=5)).fit([["a1"], ["b2"]])
    with pytest.raises(TrainingError):
        TagVocab().transform([["dog"]])
    with pytest.raises(TrainingError):
        TagVocabConfig(max_df=0)


def test_saved_vocab_reloads_identically(tmp_path: Path) -> None:
    vocab = TagVocab(TagVocabConfig(min_count=1, max_df=1.0)).fit([["Dog", "CatNap"], ["dog"]])
    (tmp_path / "v1").mkdir()
    save_vocab_for_version(tmp_path, "v1", vocab)
    loaded = load_vocab_for_version(tmp_path, "v1")
    assert loaded is not None
    assert loaded.tags == vocab.tags and loaded.counts == vocab.counts
    assert loaded.config == vocab.config
    assert load_vocab_for_version(tmp_path / "nothing", "v1") is None
    with pytest.raises(HeadVersionError):
        load_vocab_for_version(tmp_path, "../v1")
    (tmp_path / "v1" / "tags.json").write_text('{"format": 1, "tags": ["a"]}')
    with pytest.raises(HeadVersionError):
        load_vocab_for_version(tmp_path, "v1")


def test_post_tags_merge_text_and_field_like_the_stream() -> None:
    post = Post(
        id="p1",
        source="test",
        author="a",
        created_at="2024-01-01T00:00:00Z",
        text="look at this ArRoW 🔥 #Shapes #arrow",
        tags=["arrow", "StarStep"],
    )
    assert post_tags(post) == ["shapes", "arrow", "star step"]
    text = post_text(post)
    assert "shapes" in text and "star step" in text and "#" not in text


def test_topics_are_roots_of_the_subsumption_hierarchy() -> None:
    posts = (
        [["arrow", "shapes"]] * 3
        + [["arrow"]]
        + [["star", "shapes"]] * 3
        + [["shapes"]] * 2
        + [["cat", "animals"]] * 3
        + [["animals"]] * 2
        + [["tbt", "cat"], ["tbt", "star"], ["tbt"]]
    )
    vocab = TagVocab(TagVocabConfig(min_count=1, max_df=1.0)).fit(posts)
    y = vocab.transform(posts)
    vocab.fit_topics(y, threshold=0.5)
    assert vocab.topics is not None

    def topic(tag: str) -> str:
        return vocab.topic_names[vocab.topics[vocab.tags.index(tag)]]

    assert topic("arrow") == topic("star") == topic("shapes") == "shapes"
    assert topic("cat") == "animals"
    assert topic("tbt") == "tbt"  # co-occurs with everything a little: nobody's child
    z = vocab.topic_targets(y)
    assert z.shape == (len(posts), vocab.n_topics) == (len(posts), 3)
    assert z[0].tolist() == [1.0, 0.0, 0.0]  # arrow + shapes: the shapes topic only
    # A strict threshold leaves every tag its own topic.
    assert vocab.fit_topics(y, threshold=1.0).n_topics == len(vocab)
    again = TagVocab.from_json(vocab.fit_topics(y, 0.5).to_json())
    assert again.topics == vocab.topics and again.topic_names == vocab.topic_names
    with pytest.raises(TrainingError):
        vocab.fit_topics(y, threshold=0.0)
