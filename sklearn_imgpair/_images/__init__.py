"""Checking and reading inputs: validation, decoding, and the torch datasets of images."""
