"""The eval's fitted text head (``--space tag-head``): carve-out, determinism, cache, and
that it pulls paraphrases of one subject together (tiny made-up corpus, no encoder)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from crossfeed.train.trends_data import EvalCorpus, Item
from crossfeed.train.trends_space import TextHeadConfig, fitting_rows, with_tag_head

CFG = TextHeadConfig(hidden=32, epochs=30, patience=30, batch_size=64)


def _corpus(dim: int = 24) -> EvalCorpus:
    """Items whose features are a subject direction plus a large shared nuisance, so raw
    cosine mostly measures the nuisance; tags name the subject (and some noise)."""
    rng = np.random.default_rng(0)
    subjects = [f"subject{k}" for k in range(6)]
    centers = rng.normal(size=(len(subjects), dim))
    nuisance = rng.normal(size=(4, dim)) * 2.0
    items, rows = [], []
    for i in range(600):
        k = i % len(subjects)
        rows.append(centers[k] + nuisance[i % 4] + rng.normal(scale=0.5, size=dim))
        tags = (subjects[k], f"misc{i % 5}")
        items.append(Item(f"post {i}", tags, i, f"cat{k % 2}", None))
    events, event_category, event_source = [], [], []
    for k in (0, 3):
        pool = []
        for j in range(20):
            rows.append(centers[k] + nuisance[j % 4] + rng.normal(scale=0.5, size=dim))
            pool.append(Item("paraphrase", (), len(rows) - 1, f"cat{k % 2}", None))
        events.append(pool)
        event_category.append(f"cat{k % 2}")
        event_source.append(k)  # item k is about subject k
    vectors = np.asarray(rows, dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return EvalCorpus(items, events, event_category, vectors, "test", event_source)


def test_the_head_is_never_fitted_on_the_events_sources() -> None:
    corpus = _corpus()
    rows = fitting_rows(corpus)
    assert 0 not in rows and 3 not in rows
    assert len(rows) == len(corpus.items) - 2
    # what the sources say cannot move the head: change their tags, same vectors
    changed = list(corpus.items)
    for i in corpus.event_source:
        changed[i] = replace(changed[i], hashtags=("leak",))
    a = with_tag_head(corpus, None, CFG)
    b = with_tag_head(replace(corpus, items=changed), None, CFG)
    np.testing.assert_array_equal(a.vectors, b.vectors)


def test_same_corpus_same_rows_and_the_cache_is_used(tmp_path: Path) -> None:
    corpus = _corpus()
    a = with_tag_head(corpus, tmp_path, CFG)
    b = with_tag_head(corpus, None, CFG)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert a.key != corpus.key and a.key.startswith("test-taghead-")
    assert np.allclose(np.linalg.norm(a.vectors, axis=1), 1.0, atol=1e-5)
    cached = list(tmp_path.glob("vectors-test-taghead-*.npy"))
    assert len(cached) == 1
    np.save(cached[0], np.zeros_like(a.vectors))  # served from the file, not refitted
    assert not with_tag_head(corpus, tmp_path, CFG).vectors.any()
    assert with_tag_head(corpus, tmp_path, replace(CFG, seed=1)).key != a.key


def test_paraphrases_sit_closer_together_than_to_other_subjects() -> None:
    corpus = _corpus()
    fitted = with_tag_head(corpus, None, CFG)

    def margin(c: EvalCorpus) -> float:
        pool = c.vectors[[it.row for it in c.events[0]]]
        other = c.vectors[[i for i in range(len(c.items)) if i % 6 != 0]]
        same = pool @ pool.T
        return float(same[np.triu_indices(len(pool), 1)].mean() - (pool @ other.T).mean())

    assert margin(fitted) > margin(corpus) + 0.2


def test_a_corpus_without_event_sources_is_refused() -> None:
    with pytest.raises(ValueError, match="events came from"):
        with_tag_head(replace(_corpus(), event_source=[]), None, CFG)


def test_the_eval_command_runs_the_fitted_head_unless_told_otherwise() -> None:
    import argparse

    from crossfeed.train.trends_cmd import add_trends_eval

    parser = argparse.ArgumentParser()
    add_trends_eval(parser.add_subparsers())
    assert parser.parse_args(["trends"]).space == "tag-head"
    assert parser.parse_args(["trends", "--space", "untrained"]).space == "untrained"
    with pytest.raises(SystemExit):
        parser.parse_args(["trends", "--space", "clip"])
