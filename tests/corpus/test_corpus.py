"""The sample corpus: scanning, noisy text, videos, reposts, manifest, split, CLI."""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import random
import re
import shutil
from collections import Counter
from pathlib import Path

import av
import pytest

from crossfeed.core.schema import Post
from crossfeed.corpus.build import build_corpus, ensure_clipart, read_posts, split_posts
from crossfeed.corpus.fallback import generate_images
from crossfeed.corpus.source import (
    DEFAULT_CLIPART_ROOT,
    scan_images,
    singular,
    subject_words,
)
from crossfeed.corpus.text import IRRELEVANT_TAGS, _elongate, _typo
from crossfeed.exceptions import InvalidInputError
from crossfeed.ops.data import corpus as corpus_cmd


def _make_tree(dest: Path, per_category: int = 8) -> dict[str, str]:
    """A clipart-like tree with one symlink, one duplicate and one broken file in it."""
    generate_images(dest, seed=11, per_category=per_category)
    circles = sorted((dest / "shapes/circles").glob("*.png"))
    squares = sorted((dest / "shapes/squares").glob("*.png"))
    link = dest / "shapes/circles/zz_link_to_square.png"
    os.symlink(os.path.relpath(squares[0], link.parent), link)
    duplicate = dest / "symbols/stars/zz_copy_of_circle.png"  # scanned after shapes/
    shutil.copyfile(circles[0], duplicate)
    broken = dest / "symbols/arrows/zz_broken.png"
    broken.write_bytes(b"not a png at all")
    (dest / "symbols/arrows/readme.txt").write_text("ignored")
    rel = dest.resolve()
    return {
        "link": link.relative_to(dest).as_posix(),
        "duplicate": duplicate.relative_to(rel).as_posix(),
        "broken": broken.relative_to(rel).as_posix(),
    }


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("clipart")
    special = _make_tree(root, per_category=20)
    return root, special


@pytest.fixture(scope="module")
def built(tree: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory):
    root, _ = tree
    out = tmp_path_factory.mktemp("corpus")
    return build_corpus(out, clipart_root=root, seed=5, progress=False, inline_fraction=0.2)


# --------------------------------------------------------------------------- source


def test_scan_skips_symlinks_duplicates_and_broken_files(tree) -> None:
    root, special = tree
    scan = scan_images(root)
    rels = {img.rel for img in scan.images}
    assert scan.skipped["symlink"] == 1
    assert scan.skipped["duplicate"] == 1
    assert scan.skipped["unreadable"] == 1
    assert not rels & set(special.values())
    assert len(rels) == 5 * 20
    assert len({img.sha256 for img in scan.images}) == len(scan.images)
    assert all(img.path.is_absolute() and not img.path.is_symlink() for img in scan.images)
    assert {img.category_path for img in scan.images} == {
        "shapes/circles",
        "shapes/squares",
        "shapes/triangles",
        "symbols/arrows",
        "symbols/stars",
    }


@pytest.mark.skipif(not DEFAULT_CLIPART_ROOT.is_dir(), reason="openclipart-png not installed")
def test_scan_of_installed_clipart_skips_its_symlinks() -> None:
    sub = DEFAULT_CLIPART_ROOT / "science"
    links = sum(1 for d, _, files in os.walk(sub) for f in files if (Path(d) / f).is_symlink())
    regular = sum(
        1
        for d, _, files in os.walk(sub)
        for f in files
        if f.endswith(".png") and not (Path(d) / f).is_symlink()
    )
    scan = scan_images(sub)
    assert links > 0
    assert scan.skipped["symlink"] == links
    assert len(scan.images) + sum(scan.skipped.values()) - links == regular


def test_subject_words_stop_at_the_author() -> None:
    assert subject_words("full_moon_dan_gerhards_01") == ("full", "moon")
    assert subject_words("acquila_architetto_franc_01") == ("acquila",)
    assert subject_words("baby-tux_alex_kuehne_01") == ("baby", "tux")
    assert subject_words("14_ellipse") == ("ellipse",)
    assert subject_words("blueJay") == ("blue", "jay")
    assert subject_words("pen_and_paper") == ("pen", "paper")
    assert singular("birds") == "bird"
    assert singular("smilies") == "smiley"
    assert singular("boxes") == "box"
    assert singular("glass") == "glass"


def test_typo_and_elongation_change_words() -> None:
    rng = random.Random(1)
    for _ in range(50):
        typo = _typo(rng, "beautiful")
        assert typo != "beautiful" or typo.count("u") != 2  # a swap of equal letters is rare
        assert abs(len(typo) - len("beautiful")) <= 1
    assert re.search(r"(.)\1\1", _elongate(rng, "cute"))


# --------------------------------------------------------------------------- build


def test_same_seed_same_posts_other_seed_differs(tree, tmp_path: Path) -> None:
    root, _ = tree
    out = tmp_path / "c"
    kwargs = {"clipart_root": root, "limit": 40, "progress": False}
    first = build_corpus(out, seed=3, **kwargs).posts_path.read_bytes()
    again = build_corpus(out, seed=3, **kwargs).posts_path.read_bytes()
    other = build_corpus(out, seed=4, **kwargs).posts_path.read_bytes()
    assert first == again
    assert first != other
    assert len(first.splitlines()) > 40  # 40 pictures + videos + reposts


def test_posts_carry_ground_truth_and_valid_media(built, tree) -> None:
    root, _ = tree
    posts = list(read_posts(built.posts_path))
    assert [p.id for p in posts] == [p.id for p in built.posts]
    assert len({p.id for p in posts}) == len(posts)
    assert all(a.created_at <= b.created_at for a, b in itertools.pairwise(posts))
    for post in posts:
        meta = post.metadata or {}
        assert post.source == "clipart"
        assert meta["category_path"].startswith(meta["top_category"] + "/")
        assert meta["source_file"] == meta["source_files"][0]
        for rel in meta["source_files"]:
            assert rel.startswith(meta["category_path"] + "/")
            assert (root / rel).is_file()
        (media,) = post.media
        if media.path:
            assert Path(media.path).is_file()
            assert any(Path(media.path).is_relative_to(r) for r in built.media_roots)


def test_text_is_noisy(built) -> None:
    originals = [p for p in built.posts if "repost_of" not in (p.metadata or {})]
    texts = [p.text for p in originals]
    assert any("@" in t for t in texts)
    assert any("https://" in t for t in texts)
    assert any(any(ord(c) > 0x2000 for c in t) for t in texts)  # emoji
    assert any(re.search(r"(.)\1\1", t) for t in texts)  # elongated
    assert any(re.search(r"#[A-Z][a-z]+[A-Z][a-z]+", t) for t in texts)  # CamelCase tag
    assert any(not p.metadata["relevant_tags"] for p in originals)  # missing tags
    irrelevant = [p for p in originals if p.metadata["irrelevant_tags"]]
    assert irrelevant
    for post in irrelevant:
        said = " ".join([post.text, *post.tags]).lower()
        assert all(tag in said for tag in post.metadata["irrelevant_tags"])
        assert set(post.metadata["irrelevant_tags"]) <= set(IRRELEVANT_TAGS)
    run_together = [
        p
        for p in originals
        if any(f"#{t}" in p.text or t in p.tags for t in p.metadata["relevant_tags"])
    ]
    assert run_together  # some tags appear in the plain run-together form
    assert any(not p.tags for p in originals) and any(p.tags for p in originals)


def test_reposts_repeat_an_earlier_post(built) -> None:
    index = {p.id: i for i, p in enumerate(built.posts)}
    reposts = [p for p in built.posts if "repost_of" in (p.metadata or {})]
    assert reposts
    for repost in reposts:
        orig = built.posts[index[repost.metadata["repost_of"]]]
        assert index[orig.id] < index[repost.id]
        assert (repost.text, repost.tags, repost.media) == (orig.text, orig.tags, orig.media)
        assert repost.id != orig.id and repost.author != orig.author
        assert repost.metadata["source_files"] == orig.metadata["source_files"]


def test_videos_decode_with_the_expected_frames(built) -> None:
    videos = [
        p
        for p in built.posts
        if p.media[0].kind == "video" and "repost_of" not in (p.metadata or {})
    ]
    assert videos
    for post in videos:
        meta = post.metadata
        assert 3 <= len(meta["source_files"]) <= 6
        assert len(set(meta["source_files"])) == len(meta["source_files"])
        assert all(s in (1, 2) for s in meta["seconds_per_image"])
        expected = meta["fps"] * sum(meta["seconds_per_image"])
        path = Path(post.media[0].path)
        assert path.is_relative_to(built.out_dir / "videos")
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = list(container.decode(stream))
        assert len(frames) == expected == meta["frames"]
        assert (frames[0].width, frames[0].height) == (256, 256)
    # A picture goes into at most one video.
    used = Counter(f for p in videos for f in p.metadata["source_files"])
    assert max(used.values()) == 1


def test_inline_media_are_the_file_bytes(built, tree) -> None:
    root, _ = tree
    inline = [p for p in built.posts if p.media[0].data_base64]
    assert inline
    for post in inline:
        assert post.media[0].mime == "image/png" and post.metadata["inline"]
        raw = base64.b64decode(post.media[0].data_base64)
        assert raw == (root / post.metadata["source_file"]).read_bytes()


def test_manifest_counts_match_the_posts(built, tree) -> None:
    root, _ = tree
    manifest = json.loads(built.manifest_path.read_text())
    posts = built.posts
    kinds = Counter(
        "repost" if "repost_of" in p.metadata else p.metadata["modality"] for p in posts
    )
    counts = manifest["counts"]
    assert counts["posts"] == len(posts)
    assert counts["image_posts"] == kinds["image"] == 100
    assert counts["video_posts"] == kinds["video"] > 0
    assert counts["reposts"] == kinds["repost"] > 0
    assert counts["images_available"] == 100
    assert manifest["skipped"] == {"duplicate": 1, "symlink": 1, "unreadable": 1}
    assert manifest["seed"] == 5 and manifest["source"] == "openclipart"
    assert manifest["media_roots"] == [str(root.resolve()), str(built.out_dir)]
    by_cat = Counter(p.metadata["category_path"] for p in posts if "repost_of" not in p.metadata)
    assert manifest["by_category"] == dict(by_cat)
    total = sum(sum(v.values()) for v in manifest["by_top_category"].values())
    assert total == len(posts)
    # video share is close to the requested 10%
    assert 0.05 < counts["video_posts"] / counts["posts"] < 0.15


# --------------------------------------------------------------------------- split


def test_split_never_shares_a_source_picture(built) -> None:
    train, test = split_posts(built.posts, 0.25, seed=9)
    assert len(train) + len(test) == len(built.posts)
    assert 0.2 <= len(test) / len(built.posts) <= 0.4

    def files(posts: list[Post]) -> set[str]:
        return {f for p in posts for f in p.metadata["source_files"]}

    assert not files(train) & files(test)
    test_ids = {p.id for p in test}
    for post in built.posts:
        if "repost_of" in post.metadata:
            assert (post.id in test_ids) == (post.metadata["repost_of"] in test_ids)
    again = split_posts(built.posts, 0.25, seed=9)
    assert [p.id for p in again[1]] == [p.id for p in test]
    assert [p.id for p in split_posts(built.posts, 0.25, seed=10)[1]] != [p.id for p in test]
    assert split_posts(built.posts, 0.0, seed=1)[1] == []
    with pytest.raises(InvalidInputError):
        split_posts(built.posts, 1.5, seed=1)


# --------------------------------------------------------------------------- fallback, paths


def test_fallback_set_when_clipart_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no-clipart"
    assert ensure_clipart(missing, allow_install=False) is None
    result = build_corpus(tmp_path / "out", clipart_root=missing, seed=2, progress=False)
    assert result.manifest["source"] == "generated"
    assert result.media_roots == [result.out_dir]
    assert result.manifest["counts"]["categories"] == 5
    assert result.manifest["counts"]["video_posts"] > 0
    for post in result.posts:
        ref = post.media[0].path
        assert ref is None or Path(ref).is_relative_to(result.out_dir)


def test_limit_caps_images_used(tree, tmp_path: Path) -> None:
    root, _ = tree
    result = build_corpus(tmp_path / "o", clipart_root=root, limit=12, progress=False)
    assert result.manifest["counts"]["images_used"] == 12
    assert result.manifest["counts"]["image_posts"] == 12


def test_refuses_bad_output_dirs_and_options(tree, tmp_path: Path) -> None:
    root, _ = tree
    with pytest.raises(InvalidInputError, match="inside the image root"):
        build_corpus(root / "shapes" / "out", clipart_root=root, progress=False)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(InvalidInputError, match="not a directory"):
        build_corpus(a_file, clipart_root=root, progress=False)
    with pytest.raises(InvalidInputError, match="video fraction"):
        build_corpus(tmp_path / "o", clipart_root=root, video_fraction=0.95, progress=False)
    assert not (root / "shapes" / "out").exists()


def test_read_posts_reports_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "posts.jsonl"
    good = Post(id="a", source="t", author="u", created_at="2024-01-01T00:00:00Z", text="hi")
    path.write_text(good.model_dump_json() + "\n\n" + '{"id": "b"}\n')
    with pytest.raises(InvalidInputError, match=r"posts\.jsonl:3"):
        list(read_posts(path))


def test_cli_builds_and_prints_media_roots(tree, tmp_path: Path, capsys) -> None:
    root, _ = tree
    parser = argparse.ArgumentParser()
    corpus_cmd.add_commands(parser.add_subparsers())
    out = tmp_path / "cli"
    args = parser.parse_args(
        ["corpus", "--out", str(out), "--clipart-root", str(root), "--limit", "15", "--no-install"]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "CROSSFEED_MEDIA_ROOTS=" in printed
    assert str(root.resolve()) in printed
    assert (out / "posts.jsonl").is_file() and (out / "corpus.json").is_file()


@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
def test_write_video_with_each_codec(tree, tmp_path: Path, codec: str) -> None:
    from crossfeed.corpus.video import write_video

    if codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this PyAV build")
    root, _ = tree
    images = sorted((root / "shapes/circles").glob("*.png"))[:3]
    info = write_video(images, [1, 2, 1], tmp_path / "v.mp4", size=64, fps=4, codec=codec)
    with av.open(str(info.path)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == info.frames == 16
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(InvalidInputError):
        write_video(images, [1], tmp_path / "w.mp4")
