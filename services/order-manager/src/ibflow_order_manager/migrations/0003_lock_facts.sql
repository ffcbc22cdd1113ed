-- order-manager 0003: what a batch of broker facts reads before its lifecycle runs, in
-- one round trip (OrderBook.on_facts; repository.lock_facts).
--
-- A function, not one plain statement: a statement reads everything from the snapshot
-- taken when it started, i.e. before its lock waits ended, and would miss what the
-- transaction it waited for committed (a second replica booking the same execution).
-- Each statement of a VOLATILE PL/pgSQL function takes a fresh snapshot (READ
-- COMMITTED), so the reads below see everything committed before their locks were
-- granted, exactly as the separate statements they replace did.
--
-- Locks, in this order (the order every booking transaction takes them, so two
-- replicas never wait in a cycle): the executions' advisory locks in the order given
-- (the caller sorts them), then the orders FOR UPDATE in id order. The portfolio rows
-- are locked last, by the caller's writes.

CREATE FUNCTION order_manager_lock_facts(
    exec_ids text[],            -- every execution id of the batch, sorted
    commission_exec_ids text[], -- those of its commissions (their booked orders are locked)
    client_order_ids text[]     -- the orders the batch names
) RETURNS TABLE (
    fact_kind text,             -- 'booked', 'parked' or 'order'
    fact_exec_id text,
    fact_client_order_id text,  -- booked: the execution's order
    fact_known boolean,         -- booked: its commission is known
    fact_portfolio_id text,     -- parked: the commission's portfolio, amount, currency, P&L
    fact_commission numeric,
    fact_currency text,
    fact_realized_pnl numeric,
    locked orders               -- order: the row, locked
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    booked_orders text[];
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(x)) FROM unnest(exec_ids) AS x;

    -- the executions already booked, and the commissions parked for the others (taken:
    -- the caller books them with their executions or parks them again)
    RETURN QUERY
    WITH booked AS (
        SELECT e.exec_id, e.client_order_id, e.commission IS NOT NULL AS known
          FROM executions e WHERE e.exec_id = ANY(exec_ids)
    ), parked AS (
        DELETE FROM pending_commissions p
         WHERE p.exec_id = ANY(exec_ids) AND p.exec_id NOT IN (SELECT b.exec_id FROM booked b)
        RETURNING p.exec_id, p.portfolio_id, p.commission, p.currency, p.realized_pnl
    )
    SELECT 'booked'::text, b.exec_id, b.client_order_id, b.known, NULL::text,
           NULL::numeric, NULL::text, NULL::numeric, NULL::orders
      FROM booked b
    UNION ALL
    SELECT 'parked'::text, p.exec_id, NULL::text, NULL::boolean, p.portfolio_id,
           p.commission, p.currency::text, p.realized_pnl, NULL::orders
      FROM parked p;

    SELECT array_agg(e.client_order_id) INTO booked_orders
      FROM executions e WHERE e.exec_id = ANY(commission_exec_ids);

    RETURN QUERY
    SELECT 'order'::text, NULL::text, NULL::text, NULL::boolean, NULL::text,
           NULL::numeric, NULL::text, NULL::numeric, o
      FROM orders o
     WHERE o.client_order_id = ANY(client_order_ids || coalesce(booked_orders, '{}'))
     ORDER BY o.client_order_id
       FOR UPDATE;
END
$$;
