"""Inference backends, one module each, behind one protocol (base.Backend) and one registry."""
