"""crossfeed.sources: connectors that bring real social streams to ``posts.raw``.

Each connector (Bluesky's Jetstream, Mastodon's streaming API) turns the service's
events into :class:`~crossfeed.core.schema.Post` messages, deletes into tombstones,
and keeps its liveness visible (a Prometheus gauge, a status file for
``crossfeed status``). The shared loop is :class:`~crossfeed.sources.base.Connector`.
"""
