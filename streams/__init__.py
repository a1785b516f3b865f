"""crossfeed.streams."""
