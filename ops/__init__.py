"""crossfeed.ops."""
