"""Bytes on disk: the model-file container, atomic writes and the embedding cache (no torch)."""
