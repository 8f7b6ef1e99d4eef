"""One module per CLI command; each exposes ``register(app)``. Heavy imports happen inside commands."""
