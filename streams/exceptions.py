"""Errors raised by the stream processors.

The split follows the root contract: a retriable error (Redis or the index is
unreachable) makes the stage retry with back-off and never drops the message; a
non-retriable one (a refused path, an oversized or corrupt file) sends that one
post to the dead-letter topic with the reason, while the rest of its batch flows.
"""

from __future__ import annotations

from crossfeed.exceptions import CrossfeedError, InvalidInputError


class StreamsError(CrossfeedError):
    """Base class of every stream-processing error."""


class MediaError(StreamsError, InvalidInputError):
    """A media item could not be turned into bytes or pixels."""


class MediaRefusedError(MediaError):
    """The media reference points somewhere it must not (outside the roots, a private host)."""


class MediaTooLargeError(MediaError):
    """The media is larger than the configured cap."""


class MediaFetchError(MediaError):
    """Fetching a media URL failed (network, HTTP status); retrying may help."""

    retriable = True


class MediaDecodeError(MediaError):
    """The bytes are not a decodable image or video."""


class DedupeUnavailableError(StreamsError):
    """The repost store (Redis) could not be reached."""

    retriable = True


class WorkerError(StreamsError):
    """The stream worker stopped with an error."""


class ReindexError(StreamsError):
    """``crossfeed reindex`` cannot run or finish (a broker or the index is unreachable,
    the topic is missing, the target collection has another dimension)."""


class TopicError(StreamsError):
    """crossfeed's topics could not be listed or created (broker down, refused)."""

    retriable = True
