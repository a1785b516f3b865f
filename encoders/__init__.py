"""crossfeed.encoders."""
