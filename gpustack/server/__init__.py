"""The server: REST API, scheduler, controllers and the OpenAI-compatible gateway."""
