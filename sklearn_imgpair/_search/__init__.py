"""Nearest-neighbour search over embedding vectors: exact in chunks, or with FAISS."""
