"""Deployment: the ONNX export of fitted networks and the torch-free runtime that runs it."""
