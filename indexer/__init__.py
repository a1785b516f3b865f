"""crossfeed.indexer."""
