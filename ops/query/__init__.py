"""crossfeed.ops.query: commands for people at a terminal (`crossfeed search`, `crossfeed post`)."""
