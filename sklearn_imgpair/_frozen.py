"""Frozen-backbone training: each image embedded once, the match head fitted on the vectors."""

import torch

__all__ = ["EmbeddingPairDataset"]


class EmbeddingPairDataset(torch.utils.data.Dataset):
    """Pairs of precomputed embeddings, for training the match head alone.

    Parameters
    ----------
    pairs : ndarray of shape (n_pairs, 2), dtype=object
        The image paths behind the pairs (kept for reference, e.g. splits).
    y : ndarray of shape (n_pairs,) or None
        Float match targets.
    embeddings : Tensor of shape (n_images, d)
        One unit vector per distinct image.
    index : ndarray of shape (n_pairs, 2)
        Rows of ``embeddings`` of each pair's two images.

    Notes
    -----
    Items are ``({"e1": vector, "e2": vector}, target)``; the classifier
    scores such batches with the match head alone, without the backbone.
    """

    def __init__(self, pairs, y, *, embeddings, index):
        self.pairs = pairs
        self.y = y
        self.embeddings = embeddings
        self.index = torch.as_tensor(index, dtype=torch.int64)

    def __len__(self):
        return len(self.index)

    def __getitem__(self, index):
        first, second = self.index[index]
        target = 0.0 if self.y is None else self.y[index]
        return ({"e1": self.embeddings[first], "e2": self.embeddings[second]},
                torch.tensor(target, dtype=torch.float32))
