"""The domain: what workers, models, instances, users and keys are, shared by server, worker and CLI."""
