"""The async client (hand-written; ``_sync`` is generated from it)."""
