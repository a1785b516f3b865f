"""What ``crossfeed eval clipart`` leaves behind: the saved winner and a contact sheet.

The best space becomes a head version (tag-space heads with their vocabulary;
a ridge map as a linear image head over the identity text head; CCA as two
linear heads), so stream workers embed into it as "latest". The contact sheet
shows a few text queries with their top test images, framed green when they
share the query's top category.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from crossfeed.core.settings import Settings
    from crossfeed.encoders.model import SharedSpaceEmbedder
    from crossfeed.encoders.vocab import TagVocab
    from crossfeed.train.clipart_data import ClipartSplit
    from crossfeed.train.clipart_methods import Space


def save_winner(
    space: Space,
    vocab: TagVocab,
    split: ClipartSplit,
    report: dict[str, Any],
    settings: Settings,
    embedder: SharedSpaceEmbedder,
) -> str:
    """Save the winning space (its first seed) as a new head version; returns the id."""
    from crossfeed.encoders.heads import HeadSpec, ProjectionHead
    from crossfeed.encoders.versions import new_version_id, save_heads, save_vocab_for_version
    from crossfeed.train.train_cmd import TrainedSpace, save_trained

    towers = {"text": embedder.text_tower.model_id, "image": embedder.image_tower.model_id}
    summary = report["methods"][space.name]["summary"]
    metrics = {
        "eval": "clipart",
        "t2i_map": summary["t2i_map"],
        "i2t_map": summary["i2t_map"],
        "topic_map": summary["topic_map"],
        "target": report["target"],
    }
    data_hash = split.train.data_hash
    if isinstance(space.model, TrainedSpace):
        return save_trained(
            settings.models_dir,
            space.model,
            vocab,
            data_hash=data_hash,
            towers=towers,
            metrics=metrics,
            notes=f"clipart eval winner: {space.name} ({space.model.summary['objectives']})",
        )
    d_txt = split.train.text.shape[1]
    if space.name == "cca":
        model = space.model
        w = model.correlations if model.scale_by_correlation else np.ones_like(model.correlations)
        wx, wy = model.proj_x * w, model.proj_y * w
        heads = {
            "image": ProjectionHead.linear_from_numpy(wx, -model.mean_x @ wx),
            "text": ProjectionHead.linear_from_numpy(wy, -model.mean_y @ wy),
        }
    else:  # ridge / lsq: images into the text tower's space
        weight, bias = space.model
        heads = {
            "text": ProjectionHead(HeadSpec("identity", d_txt, d_txt)),
            "image": ProjectionHead.linear_from_numpy(weight, bias),
        }
    version = save_heads(
        settings.models_dir,
        heads,
        version=new_version_id(f"{space.name}-clipart"),
        data_hash=data_hash,
        metrics=metrics,
        notes=f"clipart eval winner: {space.name}",
        towers=towers,
    )
    save_vocab_for_version(settings.models_dir, version, vocab)
    return version


def write_contact_sheet(
    path: Path,
    space: Space,
    split: ClipartSplit,
    topic_text: np.ndarray,
    embedder: SharedSpaceEmbedder,
) -> Path:
    """Four topic-word queries (largest categories) and two test posts, top 6 images each."""
    from crossfeed.train import clipart_report as rep
    from crossfeed.train.tags import post_text

    counts = np.bincount(split.gallery_labels, minlength=len(split.categories))
    cats = [int(c) for c in np.argsort(-counts, kind="stable")[:4]]
    rng = np.random.default_rng(0)
    picks = [int(i) for i in rng.choice(len(split.queries), size=2, replace=False)]
    texts = [split.topic_words[c] for c in cats] + [
        post_text(split.posts[split.queries.post_ids[i]]) for i in picks
    ]
    vectors = np.concatenate(
        [space.embed_text(topic_text[cats]), space.embed_text(split.queries.text[picks])]
    )
    labels = [*cats, *(int(split.query_labels[i]) for i in picks)]
    relevant = [split.gallery_labels == c for c in labels]
    gallery = space.embed_image(split.gallery.image)
    return rep.contact_sheet(
        path,
        texts,
        vectors,
        gallery,
        lambda i: thumbnail(split, i, embedder),
        relevant,
        title=f"text queries -> top test images ({space.name}); green = same top category",
    )


def thumbnail(split: ClipartSplit, i: int, embedder: SharedSpaceEmbedder) -> Image.Image | None:
    """A small RGB picture of gallery item ``i`` (a video's first frame), or None."""
    from crossfeed.encoders.exceptions import MediaDecodeError
    from crossfeed.train.features import read_media_bytes

    post = split.posts[split.gallery.post_ids[i]]
    ref = split.gallery.media_refs[i]
    item = next((m for m in post.media if m.reference() == ref), None)
    if item is None:
        return None
    try:
        data = read_media_bytes(
            item, split.posts_path.parent, split.media_roots, embedder.settings.max_media_bytes
        )
        if data is None:
            return None
        if item.kind == "image":
            image = embedder.decode_image(data)
        else:
            frames = embedder.decode_video(data)
            image = frames[0][1]
    except MediaDecodeError:
        return None
    image = image.convert("RGB")
    image.thumbnail((128, 128))
    return image
