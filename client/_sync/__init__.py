"""The sync client, generated from ``_async`` by ``python -m crossfeed.client.codegen``."""
