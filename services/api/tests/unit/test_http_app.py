"""The app before it is connected: CORS closed unless configured, 503 while starting,
401 before anything else."""

from __future__ import annotations

import httpx

from ibflow_api.app import create_app
from ibflow_api.keys import KEY_PREFIX
from ibflow_api.settings import ApiSettings

PREFLIGHT = {
    "Origin": "https://dash.example",
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "X-API-Key",
}


def _client(**settings: object) -> httpx.AsyncClient:
    app = create_app(ApiSettings.load(**settings))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def test_cors_is_closed_by_default_and_opens_for_configured_origins() -> None:
    async with _client() as closed:
        refused = await closed.options("/api/v1/ib/orders", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in refused.headers
    async with _client(cors_origins=["https://dash.example"]) as open_:
        allowed = await open_.options("/api/v1/ib/orders", headers=PREFLIGHT)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://dash.example"


async def test_without_a_key_it_is_401_and_with_one_503_until_connected() -> None:
    async with _client() as http:
        anonymous = await http.get("/api/v1/ib/orders")
        keyed = await http.get(
            "/api/v1/ib/orders", headers={"X-API-Key": f"{KEY_PREFIX}0123456789ab_{'a' * 43}"}
        )
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert keyed.status_code == 503
    assert keyed.json() == {"error": {"code": "not_ready", "message": "the API is starting"}}


def test_openapi_documents_every_route_with_its_errors_and_both_key_schemes() -> None:
    schema = create_app(ApiSettings.load()).openapi()
    assert set(schema["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
            assert operation.get("security"), (method, path)
