"""Management REST API, one module per resource."""
