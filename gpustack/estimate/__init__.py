"""Pure resource estimates for models: (model metadata, engine options) -> memory needs, no I/O."""
