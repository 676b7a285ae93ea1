"""Routing resources as YAML documents for the balancing and scoring unit tests: an endpoint, its
deployments and its keys' Secret, and `blue_green`, the usual two-deployment endpoint."""

from __future__ import annotations

from router.discovery.documents import load_yaml
from router.model import Resources

API = "apiVersion: inference-router.dev/v1alpha1"


def endpoint(name: str = "mnist", traffic: str = "{blue: 90, green: 10}", *, keys: str | None = "mnist-keys",
             namespace: str = "default") -> str:
    ref = f"\n  keysSecretRef: {keys}" if keys else ""
    return f"""{API}
kind: OnlineEndpoint
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  authMode: key{ref}
  traffic: {traffic}
"""


def deployment(name: str, urls: list[str], *, endpoint: str = "mnist", timeout_ms: int = 5000,
               route: str = "/score", namespace: str = "default") -> str:
    listed = ", ".join(f'"{u}"' for u in urls)
    return f"""{API}
kind: OnlineDeployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  endpointName: {endpoint}
  backend: {{urls: [{listed}]}}
  scoringRoute: {route}
  requestSettings: {{requestTimeoutMs: {timeout_ms}}}
"""


def secret(name: str = "mnist-keys", *, namespace: str = "default", **keys: str) -> str:
    data = "".join(f"\n  {k}: {v}" for k, v in keys.items())
    return f"""apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {namespace}}}
stringData:{data}
"""


def resources(*documents: str) -> Resources:
    return load_yaml("---\n".join(documents), origin="test.yaml")


BLUE = ["http://127.0.0.1:5001", "http://127.0.0.1:5002"]
GREEN = ["http://127.0.0.1:6001"]
# endpoint keys as Azure ML makes them: 32 characters (the router refuses fewer than 16)
PRIMARY = "pK7vQ2xW9mL4nC8rB5hD1jF6gS3tY0aZ"
SECONDARY = "sE4uR8yT2iO6pA1sD5fG9hJ3kL7zX0cV"


def blue_green(blue: list[str] = BLUE, green: list[str] = GREEN, *,
               keys: dict[str, str] | None = None) -> Resources:
    keys = keys or {"primaryKey": PRIMARY, "secondaryKey": SECONDARY}
    return resources(endpoint(), deployment("blue", blue, timeout_ms=2500, route="/predict"),
                     deployment("green", green), secret(**keys))
