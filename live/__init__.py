"""Live monitoring: standing queries (a semantic percolator), freshness, activity, thumbnails."""
