"""Model files, atomic writes, the embedding cache, and where and how networks run."""
