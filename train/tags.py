"""What training reads of a post: its normalised hashtags and the text the stream embeds.

The tag vocabulary itself ships with inference (:mod:`crossfeed.encoders.vocab`): a
tag-space head needs it to name its outputs, as a text model needs its tokenizer.
"""

from __future__ import annotations

from crossfeed.core.schema import Post
from crossfeed.core.text import clean_text_and_hashtags, embedding_text, merge_hashtags


def post_tags(post: Post) -> list[str]:
    """A post's normalised hashtags: those in its text, then its ``tags`` field (deduplicated).

    The same merge the stream's clean stage does, so a vocabulary fitted on
    training posts matches the tags stored in the index.
    """
    _, from_text = clean_text_and_hashtags(post.text)
    return merge_hashtags(from_text, post.tags)


def post_text(post: Post) -> str:
    """The text the stream embeds for a post: clean text plus its hashtags."""
    clean, from_text = clean_text_and_hashtags(post.text)
    return embedding_text(clean, merge_hashtags(from_text, post.tags))
