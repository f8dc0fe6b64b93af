"""The OpenAI-compatible gateway: routes requests by model name to running instances via worker proxies."""
