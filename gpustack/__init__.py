"""GPUStack: turn mixed machines with accelerators into one cluster that serves AI models."""

__version__ = "0.1.0"
