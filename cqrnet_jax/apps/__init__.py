"""The command-line applications (`cqrnet-jax COMMAND`, `python -m cqrnet_jax.main`).

They depend on the library (models, data, inference, evaluation, quality, export, train); nothing
in the library imports from here.
"""
