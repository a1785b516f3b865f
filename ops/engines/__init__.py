"""crossfeed.ops.engines: the local engines (`crossfeed up|down|status`)."""
