"""crossfeed.corpus."""
