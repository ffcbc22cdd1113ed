"""ibflow's own resources: portfolio settings announced to the bridge, risk limits,
halt/resume, history with cursor pagination, recommendations, performance."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ibflow.contracts import PortfolioChanged
from ibflow.db import apply_migrations
from ibflow_api.keys import Scope

from .conftest import PORTFOLIO, Stack, wait_for


async def _seed_orders(stack: Stack, count: int) -> None:
    base = dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC)
    for i in range(count):
        await stack.db.execute(
            """
            INSERT INTO orders (client_order_id, portfolio_id, symbol, side, order_type, quantity,
                                limit_price, purpose, requested_by, created_at)
            VALUES ($1, $2, 'AAPL', 'BUY', 'LMT', 1, 90, 'manual', 'test', $3)
            """,
            f"seed-{i:03d}",
            PORTFOLIO,
            base + dt.timedelta(seconds=i // 3),  # ties on created_at, broken by id
        )


async def test_order_history_pages_by_cursor_without_gaps_or_repeats(stack: Stack) -> None:
    await _seed_orders(stack, 23)
    seen: list[str] = []
    cursor: str | None = None
    async with stack.client() as http:
        while True:
            params: dict[str, Any] = {"limit": 5}
            if cursor:
                params["cursor"] = cursor
            page = await http.get(f"/api/v1/portfolios/{PORTFOLIO}/orders", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            seen.extend(o["client_order_id"] for o in body["items"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        bad = await http.get(f"/api/v1/portfolios/{PORTFOLIO}/orders", params={"cursor": "nope"})
        filtered = await http.get(
            f"/api/v1/portfolios/{PORTFOLIO}/orders", params={"status": "FILLED"}
        )
    assert seen == [f"seed-{i:03d}" for i in reversed(range(23))]
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "cursor"] or "cursor" in str(bad.json())
    assert filtered.json() == {"items": [], "next_cursor": None}


async def test_portfolio_changes_are_announced_and_audited(stack: Stack) -> None:
    changed: list[PortfolioChanged] = []

    async def collect(msg: Any) -> None:
        changed.append(PortfolioChanged.from_json(msg.data))

    sub = await stack.nc.subscribe("ibflow.evt.v1.portfolio.changed.apit", cb=collect)
    try:
        async with stack.client(Scope.TRADE) as http:
            limits = await http.put(
                f"/api/v1/portfolios/{PORTFOLIO}/risk-limits",
                json={"max_order_value": "2500", "max_open_orders": 3},
            )
            assert limits.status_code == 200, limits.text
            assert limits.json()["max_order_value"] == "2500"
            renamed = await http.patch(f"/api/v1/portfolios/{PORTFOLIO}", json={"name": "renamed"})
            assert renamed.json()["name"] == "renamed"
            refused = await http.post(
                "/api/v1/ib/orders/place",
                json={"symbol": "AAPL", "action": "BUY", "quantity": 30, "order_type": "LMT",
                      "limit_price": "100"},
            )  # fmt: skip
            assert refused.status_code == 409, refused.text
            assert "max_order_value" in refused.json()["error"]["message"]
        await wait_for(lambda: len(changed) >= 2, within=10)
    finally:
        await sub.unsubscribe()
    assert [c.revision for c in changed][:2] == sorted(c.revision for c in changed)[:2]
    audit = await stack.db.fetch(
        "SELECT command, actor FROM audit_log WHERE subject = 'portfolio:apit' ORDER BY id"
    )
    assert [r["command"] for r in audit] == ["SetRiskLimits", "UpdatePortfolio"]
    assert all(r["actor"].endswith(":test-trade") for r in audit)


async def test_recommendations_are_submitted_and_listed_with_their_status(stack: Stack) -> None:
    session = dt.date(2026, 11, 23)
    async with stack.client(Scope.TRADE) as http:
        submitted = await http.post(
            f"/api/v1/portfolios/{PORTFOLIO}/recommendations",
            json={
                "session_date": session.isoformat(),
                "items": [
                    {"symbol": "AAPL", "quantity": "5"},
                    {"symbol": "MSFT", "allocation": "0.1"},
                ],
            },
        )
        assert submitted.status_code == 200, submitted.text
        listed = await http.get(
            f"/api/v1/portfolios/{PORTFOLIO}/recommendations",
            params={"session_date": session.isoformat()},
        )
    rows = listed.json()
    assert [(r["symbol"], r["status"]) for r in rows] == [("AAPL", "pending"), ("MSFT", "pending")]
    assert rows[0]["quantity"] == "5"


async def _closed_position(
    stack: Stack, pid: str, session: dt.date, entry: str, exit_: str, pnl: str
) -> None:
    closed_at = dt.datetime.combine(session, dt.time(19), tzinfo=dt.UTC)
    await stack.db.execute(
        """
        INSERT INTO positions (id, portfolio_id, symbol, session_date, side, status,
            planned_quantity, quantity, entry_quantity, exit_quantity, entry_notional,
            exit_notional, avg_entry_price, avg_exit_price, entry_client_order_id,
            exit_client_order_ids, exit_client_order_id, exit_reason, realized_pnl,
            commissions, opened_at, closed_at)
        VALUES ($1, $2, 'AAPL', $3, 'LONG', 'CLOSED', 10, 0, 10, 10, 10 * $4::numeric,
            10 * $5::numeric, $4::numeric, $5::numeric, $1 || '-in', ARRAY[$1 || '-out'],
            $1 || '-out', 'target', $6::numeric, 2, $7, $7)
        """,
        pid,
        PORTFOLIO,
        session,
        entry,
        exit_,
        pnl,
        closed_at,
    )


async def test_performance_summary_counts_closed_positions_by_day_and_week(stack: Stack) -> None:
    await apply_migrations(stack.db, "ibflow_position_monitor")
    monday, tuesday, next_monday = (
        dt.date(2026, 11, 9),
        dt.date(2026, 11, 10),
        dt.date(2026, 11, 16),
    )
    await _closed_position(stack, "p1", monday, "100", "101", "8")
    await _closed_position(stack, "p2", tuesday, "100", "99", "-12")
    await _closed_position(stack, "p3", next_monday, "100", "102", "18")
    async with stack.client() as http:
        summary = await http.get(
            f"/api/v1/portfolios/{PORTFOLIO}/performance",
            params={"since": "2026-11-01", "until": "2026-11-20"},
        )
        positions = await http.get(
            f"/api/v1/portfolios/{PORTFOLIO}/positions", params={"session_date": "2026-11-09"}
        )
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert body["total"] == {
        "period_start": "2026-11-01", "trades": 3, "wins": 2, "losses": 1,
        "win_rate": "0.6667", "realized_pnl": "14", "commissions": "6",
    }  # fmt: skip
    assert [(d["period_start"], d["realized_pnl"]) for d in body["by_day"]] == [
        ("2026-11-09", "8"), ("2026-11-10", "-12"), ("2026-11-16", "18"),
    ]  # fmt: skip
    assert [(w["period_start"], w["trades"], w["realized_pnl"]) for w in body["by_week"]] == [
        ("2026-11-09", 2, "-4"), ("2026-11-16", 1, "18"),
    ]  # fmt: skip
    assert [p["id"] for p in positions.json()] == ["p1"]
    assert positions.json()[0]["realized_pnl"] == "8"
