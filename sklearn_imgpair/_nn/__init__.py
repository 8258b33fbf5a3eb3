"""Torch parts: device and precision, backbones, the Siamese network and its head, augmentation."""
