"""crossfeed.ops.run."""
