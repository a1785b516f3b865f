"""crossfeed.ops.data."""
