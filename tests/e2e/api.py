"""The management API as the e2e tests drive it: logged in as the admin of a Cluster started with PASSWORD."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.cluster import Cluster, wait_until

PASSWORD = "E2e-Admin-Pass"


class Api:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        response = self.http.post("/auth/login", json={"username": "admin", "password": PASSWORD})
        assert response.status_code == 200, response.text

    def deploy(self, body: dict[str, Any]) -> dict:
        response = self.http.post("/v2/models", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def instance_of(self, model: str) -> dict | None:
        items = self.http.get("/v2/model-instances").json()["items"]
        return next((i for i in items if i["model_name"] == model), None)

    def in_state(self, model: str, *states: str) -> dict | None:
        """The model's instance when it is in one of `states`."""
        instance = self.instance_of(model)
        return instance if instance is not None and instance["state"] in states else None

    def key(self, name: str) -> str:
        """A new API key's secret."""
        response = self.http.post("/v2/api-keys", json={"name": name})
        assert response.status_code == 201, response.text
        return str(response.json()["value"])


def ready_api(cluster: Cluster) -> Api:
    """The cluster's API once its embedded worker is ready."""
    api = Api(cluster.url)
    wait_until(
        lambda: [w for w in api.http.get("/v2/workers").json()["items"] if w["state"] == "ready"],
        30,
        "the embedded worker",
    )
    return api
