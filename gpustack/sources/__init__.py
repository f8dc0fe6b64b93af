"""Model sources, one module each behind one protocol (base.ModelSource) and one registry."""
