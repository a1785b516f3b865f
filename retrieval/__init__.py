"""crossfeed.retrieval."""
