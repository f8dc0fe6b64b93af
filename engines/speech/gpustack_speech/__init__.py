"""GPUStack's speech engine: serves one speech model over OpenAI's audio routes."""

__version__ = "0.1.0"
