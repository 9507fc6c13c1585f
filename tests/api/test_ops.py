from __future__ import annotations

from fastapi.testclient import TestClient

from app.context import Context


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


def test_readyz_reports_simulated_sites_that_did_not_start(client: TestClient, ctx: Context) -> None:
    """`essx run` records why its simulated sites could not start; /readyz is then not ready, and says why."""
    assert "demo_sites" not in client.get("/readyz").json()
    failure = "3 simulated sites could not listen on 127.0.0.1 (ports 15020, 15021, 15022): address in use"
    ctx.settings = ctx.settings.model_copy(update={"demo_sites_failure": failure})
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    assert ready.json()["demo_sites"] == failure and ready.json()["database"] == "ok"
