"""crossfeed: streaming social-media ingestion and cross-media retrieval."""

__version__ = "0.1.0"
