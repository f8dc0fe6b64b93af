"""Inference engines the worker can run, one module per backend."""
