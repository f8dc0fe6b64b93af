"""Errors a backend raises where it finds the problem; their messages say what to change."""

from __future__ import annotations


class ModelUnreadable(Exception):
    """The model's files cannot be read or estimated (missing, not a model, unsupported)."""


class UnknownBackend(ValueError):
    """No backend of that name is registered."""
