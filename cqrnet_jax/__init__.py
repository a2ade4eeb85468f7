"""cqrnet_jax: JPEG artifacts removal via Compression Quality Ranker-guided networks, in JAX."""

__version__ = "0.1.0"
