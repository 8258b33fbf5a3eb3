"""Scaling out: embeddings on a Dask cluster, training through Hugging Face Accelerate."""
