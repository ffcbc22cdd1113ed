-- order-manager 0004: what a submit decides on, read after the portfolio's lock, in the
-- same round trip as the lock (OrderBook.submit; repository.submit_context). Before, the
-- lock (SELECT ... FOR UPDATE) and the read were two statements, two round trips.
--
-- A function for the reason 0003_lock_facts is one: a plain statement reads what was
-- committed when it started, before its lock wait ended, and would miss an order (or a
-- reservation) a concurrent submit of the same portfolio committed meanwhile; the risk
-- limits would then count without it. Each statement of a VOLATILE PL/pgSQL function
-- takes a fresh snapshot (READ COMMITTED), so the read below sees it.

CREATE FUNCTION order_manager_submit_context(
    p_portfolio_id text,
    p_symbol text,
    p_session_start timestamptz,  -- the trading session's start (today's P&L, day trades)
    p_working text[],             -- the working statuses
    p_client_order_id text
) RETURNS TABLE (
    portfolio portfolios,         -- locked FOR UPDATE; NULL when there is no such portfolio
    existing orders,              -- the order already recorded under the client order id
    instrument instruments,       -- NULL when the symbol is unknown
    open_orders bigint,           -- the portfolio's working orders
    position_quantity numeric,    -- net shares held in the symbol (long positive)
    working_buy numeric,          -- working quantity in the symbol, by side
    working_sell numeric,
    realized_pnl numeric,         -- IB's realized P&L of the session's executions
    day_trade boolean             -- an entry of the session in the symbol is working or open
)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM portfolios pf WHERE pf.id = p_portfolio_id FOR UPDATE;

    RETURN QUERY
    SELECT
        (SELECT pf FROM portfolios pf WHERE pf.id = p_portfolio_id),
        (SELECT o FROM orders o WHERE o.client_order_id = p_client_order_id),
        (SELECT i FROM instruments i WHERE i.symbol = p_symbol),
        (SELECT count(*) FROM orders o
          WHERE o.portfolio_id = p_portfolio_id AND o.status = ANY(p_working)),
        (SELECT coalesce(sum(CASE e.side WHEN 'BUY' THEN e.quantity ELSE -e.quantity END), 0)
           FROM executions e WHERE e.portfolio_id = p_portfolio_id AND e.symbol = p_symbol),
        (SELECT coalesce(sum(o.quantity - o.filled_quantity) FILTER (WHERE o.side = 'BUY'), 0)
           FROM orders o WHERE o.portfolio_id = p_portfolio_id AND o.symbol = p_symbol
            AND o.status = ANY(p_working)),
        (SELECT coalesce(sum(o.quantity - o.filled_quantity) FILTER (WHERE o.side = 'SELL'), 0)
           FROM orders o WHERE o.portfolio_id = p_portfolio_id AND o.symbol = p_symbol
            AND o.status = ANY(p_working)),
        (SELECT coalesce(sum(e.ib_realized_pnl), 0) FROM executions e
          WHERE e.portfolio_id = p_portfolio_id AND e.executed_at >= p_session_start),
        EXISTS (SELECT 1 FROM orders o
                 WHERE o.portfolio_id = p_portfolio_id AND o.symbol = p_symbol
                   AND o.purpose = 'entry' AND o.created_at >= p_session_start
                   AND (o.status = ANY(p_working) OR
                        (o.status = 'FILLED' AND NOT EXISTS (
                           SELECT 1 FROM orders x
                            WHERE x.position_id = o.position_id
                              AND x.purpose = 'exit' AND x.status = 'FILLED'))));
END
$$;
