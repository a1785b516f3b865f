"""crossfeed.api."""
