"""Torch parts: backbone building, the Siamese network and its cosine head, augmentation."""
