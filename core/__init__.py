"""crossfeed.core."""
