"""crossfeed.encoders.train."""
