from __future__ import annotations

from fastapi.testclient import TestClient


def test_health_ready_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["database"] == "ok" and body["contracts"] == "ok" and body["chain_id"] == 31337
    assert "X-Request-ID" in ready.headers
    metrics = client.get("/metrics").text
    assert "essx_http_requests_total" in metrics


def test_openapi_docs_served(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/v1/admin/coin/mint" in paths and "/api/v1/accounts/{address}/transfers" in paths
