"""crossfeed.ops.bench: benchmarks (`crossfeed bench ...`)."""
