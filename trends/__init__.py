"""Trend search: what is bursting now, in hashtags and in the shared space.

:mod:`crossfeed.trends.base` holds the seam: what the stream feeds in
(:class:`Observation`), what readers get back (:class:`TrendView`) and the
:class:`TrendTracker` interface both sides use.
"""
