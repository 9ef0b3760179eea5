"""Decoding with per-layer caches (caches.py, decode.py), sampling (sampling.py), the
`generate` API (api.py) and `hybrid-jax generate` (cli.py)."""
