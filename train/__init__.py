"""crossfeed.train."""
