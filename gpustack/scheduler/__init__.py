"""Placement of model instances on workers and GPUs. Pure: plain data in, a placement or reasons out."""
