-- ibflow_order_manager 0002: the rest of order-manager's schema. Orders and their
-- lifecycle, the broker's executions and commissions, the cash transaction of each
-- execution, the morning session's recommendations, the instruments we may trade,
-- and the audit log of every command; plus the portfolio settings they need.
--
-- Same rules as 0001: money, prices and quantities are numeric (exact, Decimal in
-- Python), never float, and every numeric column is bounded by "< 'Infinity'" (which
-- also excludes 'NaN', since NaN sorts above every number). Signed amounts are
-- bounded on both sides. Every CHECK is named <table>_<what>, so a refused row names
-- the rule it broke.
--
-- The CHECKs are a last line of defence under the domain code, not a replacement
-- for it: they mirror the contracts in ibflow.contracts (orders.py, recommendations.py,
-- enums.py) and add only bounds no sane command crosses (blank text, absurd lengths).
-- The domain validates first and names the field; these make sure nothing that slipped
-- past it, or past a hand-written UPDATE, is stored.


-- ---------------------------------------------------------------------- portfolios

-- Cash is a ledger of broker facts: a fill that costs more than the cash left (a market
-- order slipping past its reservation) must still be booked, so cash may go negative;
-- the risk checks, not a constraint, keep new orders within the cash.
ALTER TABLE portfolios DROP CONSTRAINT portfolios_cash_non_negative,
    ADD CONSTRAINT portfolios_cash_finite CHECK (cash > '-Infinity' AND cash < 'Infinity');

ALTER TABLE portfolios
    -- Orders working longer than this get their remainder cancelled by the stale sweep.
    ADD COLUMN stale_order_minutes     integer     NOT NULL DEFAULT 10
        CONSTRAINT portfolios_stale_order_minutes_positive
        CHECK (stale_order_minutes > 0),
    -- Why and since when trading_state is 'halted' (HaltTrading's reason, or the risk
    -- rule that halted it automatically).
    ADD COLUMN halted_reason           text        NULL,
    ADD COLUMN halted_at               timestamptz NULL,
    -- Revision of the last PortfolioChanged published for this portfolio: bumped in
    -- the same transaction as the change it describes, so consumers keep the highest
    -- one. 0 = nothing published yet (published revisions start at 1).
    ADD COLUMN revision                bigint      NOT NULL DEFAULT 0
        CONSTRAINT portfolios_revision_non_negative
        CHECK (revision >= 0),
    -- A MKT buy has no price: it reserves quantity x reference price x (1 + buffer),
    -- so a fill slightly above the last price is still covered by the reservation.
    -- A fraction: 0.01 = 1 %; more than 50 % would be a typo, not a buffer.
    ADD COLUMN reservation_buffer      numeric     NOT NULL DEFAULT 0.01
        CONSTRAINT portfolios_reservation_buffer_fraction
        CHECK (reservation_buffer >= 0 AND reservation_buffer <= 0.5),
    -- Whether HaltTrading also cancels working entry orders (exits always keep working:
    -- they reduce risk).
    ADD COLUMN cancel_entries_on_halt  boolean     NOT NULL DEFAULT false,
    -- Halt details belong to a halt: a resume clears them (the history is in
    -- audit_log). The converse is not required: a halt set by hand in psql without a
    -- reason must still stop trading; refusing the safer action over bookkeeping
    -- would be wrong.
    ADD CONSTRAINT portfolios_halt_details_only_when_halted
        CHECK (trading_state = 'halted' OR (halted_reason IS NULL AND halted_at IS NULL));

-- One updated_at trigger function for every table of this package that has the column
-- (portfolios keeps its own from 0001; applied files are never edited).
CREATE FUNCTION order_manager_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;


-- --------------------------------------------------------------------- instruments

-- The symbols ibflow may trade, with what validation needs (tick size, currency,
-- fractional rule). Orders, executions and recommendations deliberately have no
-- foreign key to this table: an external order (placed in TWS) or its fills can be
-- in any symbol and must be recorded anyway, and an unknown symbol in a
-- recommendation is skipped with a reason at the morning entry, not refused at
-- submit. Whether our own orders name a known, enabled symbol is checked in code.
CREATE TABLE instruments (
    -- As IB spells it ("AAPL", "BRK B"): 1..32 characters, no outer spaces.
    symbol            text        PRIMARY KEY
                                  CONSTRAINT instruments_symbol_format
                                  CHECK (length(symbol) BETWEEN 1 AND 32 AND symbol = btrim(symbol)),
    -- IB's contract id, once resolved (executions carry it).
    con_id            bigint      NULL
                                  CONSTRAINT instruments_con_id_unique UNIQUE
                                  CONSTRAINT instruments_con_id_positive
                                  CHECK (con_id > 0),
    currency          char(3)     NOT NULL DEFAULT 'USD'
                                  CONSTRAINT instruments_currency_iso
                                  CHECK (currency ~ '^[A-Z]{3}$'),
    -- Listing exchange (NASDAQ, NYSE, ARCA); orders route via SMART regardless.
    primary_exchange  text        NOT NULL
                                  CONSTRAINT instruments_primary_exchange_not_blank
                                  CHECK (btrim(primary_exchange) <> ''
                                         AND length(primary_exchange) <= 32),
    -- NULL = the Reg NMS rule for US stocks: 0.01 at or above $1.00, 0.0001 below.
    -- A value overrides it for every price.
    tick_size         numeric     NULL
                                  CONSTRAINT instruments_tick_size_positive
                                  CHECK (tick_size > 0 AND tick_size < 'Infinity'),
    -- Contract multiplier (1 for stocks); notional = quantity x price x multiplier.
    multiplier        numeric     NOT NULL DEFAULT 1
                                  CONSTRAINT instruments_multiplier_positive
                                  CHECK (multiplier > 0 AND multiplier < 'Infinity'),
    -- IB accepts fractional quantities for this symbol (the portfolio must allow them too).
    fractional        boolean     NOT NULL DEFAULT false,
    enabled           boolean     NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER instruments_updated_at
    BEFORE UPDATE ON instruments
    FOR EACH ROW EXECUTE FUNCTION order_manager_set_updated_at();


-- -------------------------------------------------------------------------- orders

-- Our record of every order: ours (entry / exit / manual, persisted as PENDING before
-- anything is sent) and external ones (purpose 'external': placed outside ibflow,
-- e.g. in TWS, and found in the broker's events; recorded, never dropped, so their
-- fills and the cash they move are booked like any other).
--
-- The key is our client_order_id (sent to IB as orderRef). IB's order id is NOT a
-- key: it is unique only per client id and session and is reissued after restarts
-- (failure mode 7); permId is IB's durable id, unique per portfolio below.
--
-- External orders are looser on purpose: the broker events that reveal them
-- (OrderStatusChanged, ExecutionReported) carry neither the order type nor the TIF,
-- and a status report carries no symbol or side; TWS also offers types we never send
-- (MOC, REL...). So for purpose = 'external' symbol, side, order_type, quantity and tif
-- may be NULL until an event tells us, and the price-presence rule is not enforced
-- (IB's aux price may be a stop price or a trailing amount). Everything that is
-- present is still range-checked.
CREATE TABLE orders (
    client_order_id        text        PRIMARY KEY
                                       CONSTRAINT orders_client_order_id_format
                                       CHECK (client_order_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    portfolio_id           text        NOT NULL REFERENCES portfolios (id),

    -- Terms (ibflow.contracts.orders.OrderTerms).
    symbol                 text        NULL
                                       CONSTRAINT orders_symbol_format
                                       CHECK (length(symbol) BETWEEN 1 AND 32),
    side                   text        NULL
                                       CONSTRAINT orders_side_known
                                       CHECK (side IN ('BUY', 'SELL')),
    order_type             text        NULL
                                       CONSTRAINT orders_order_type_known
                                       CHECK (order_type IN ('MKT', 'LMT', 'STP', 'STP_LMT', 'TRAIL')),
    -- numeric: fractional shares.
    quantity               numeric     NULL
                                       CONSTRAINT orders_quantity_positive
                                       CHECK (quantity > 0 AND quantity < 'Infinity'),
    limit_price            numeric     NULL
                                       CONSTRAINT orders_limit_price_positive
                                       CHECK (limit_price > 0 AND limit_price < 'Infinity'),
    -- Trigger price of STP / STP_LMT.
    stop_price             numeric     NULL
                                       CONSTRAINT orders_stop_price_positive
                                       CHECK (stop_price > 0 AND stop_price < 'Infinity'),
    -- TRAIL: exactly one of amount / percent; trail_stop_price is the optional initial stop.
    trailing_amount        numeric     NULL
                                       CONSTRAINT orders_trailing_amount_positive
                                       CHECK (trailing_amount > 0 AND trailing_amount < 'Infinity'),
    trailing_percent       numeric     NULL
                                       CONSTRAINT orders_trailing_percent_range
                                       CHECK (trailing_percent > 0 AND trailing_percent < 100),
    trail_stop_price       numeric     NULL
                                       CONSTRAINT orders_trail_stop_price_positive
                                       CHECK (trail_stop_price > 0 AND trail_stop_price < 'Infinity'),
    -- The contract's default; an external order's writer passes NULL when unknown.
    tif                    text        NULL DEFAULT 'DAY'
                                       CONSTRAINT orders_tif_known
                                       CHECK (tif IN ('DAY', 'GTC', 'IOC', 'FOK', 'OPG')),
    outside_rth            boolean     NOT NULL DEFAULT false,
    exchange               text        NOT NULL DEFAULT 'SMART'
                                       CONSTRAINT orders_exchange_not_blank
                                       CHECK (btrim(exchange) <> '' AND length(exchange) <= 32),
    currency               char(3)     NOT NULL DEFAULT 'USD'
                                       CONSTRAINT orders_currency_iso
                                       CHECK (currency ~ '^[A-Z]{3}$'),

    -- Intent (OrderIntent): why the order exists and who asked.
    purpose                text        NOT NULL
                                       CONSTRAINT orders_purpose_known
                                       CHECK (purpose IN ('entry', 'exit', 'manual', 'external')),
    position_id            text        NULL
                                       CONSTRAINT orders_position_id_format
                                       CHECK (position_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    exit_reason            text        NULL
                                       CONSTRAINT orders_exit_reason_known
                                       CHECK (exit_reason IN ('stop', 'target', 'close_out', 'manual', 'external')),
    -- Entries: the position's protective levels (watched by position-monitor, not sent to IB).
    stop_loss              numeric     NULL
                                       CONSTRAINT orders_stop_loss_positive
                                       CHECK (stop_loss > 0 AND stop_loss < 'Infinity'),
    take_profit            numeric     NULL
                                       CONSTRAINT orders_take_profit_positive
                                       CHECK (take_profit > 0 AND take_profit < 'Infinity'),
    -- The price the order was sized and its cash reserved at (last price for a MKT
    -- order); kept so a reservation can be explained afterwards.
    reference_price        numeric     NULL
                                       CONSTRAINT orders_reference_price_positive
                                       CHECK (reference_price > 0 AND reference_price < 'Infinity'),
    -- A user ("user:alice", an API key id), a service ("position-monitor"), or for an
    -- external order whoever recorded it.
    requested_by           text        NOT NULL
                                       CONSTRAINT orders_requested_by_not_blank
                                       CHECK (btrim(requested_by) <> '' AND length(requested_by) <= 128),
    -- Bracket / OCA child -> its parent, in the same portfolio (composite key below).
    parent_client_order_id text        NULL,

    -- Our lifecycle (ibflow.contracts.enums.OrderStatus).
    status                 text        NOT NULL DEFAULT 'PENDING'
                                       CONSTRAINT orders_status_known
                                       CHECK (status IN ('PENDING', 'SUBMITTED', 'PARTIALLY_FILLED', 'FILLED',
                                                         'CANCEL_REQUESTED', 'CANCELLED', 'REJECTED', 'UNKNOWN')),
    -- +1 per transition; OrderBookUpdated carries it (consumers keep the highest).
    revision               integer     NOT NULL DEFAULT 1
                                       CONSTRAINT orders_revision_positive
                                       CHECK (revision >= 1),
    -- The sum of this order's executions, never IB's status figure (failure mode 11).
    filled_quantity        numeric     NOT NULL DEFAULT 0
                                       CONSTRAINT orders_filled_quantity_non_negative
                                       CHECK (filled_quantity >= 0 AND filled_quantity < 'Infinity'),
    -- Average price of those executions (commission tracked separately).
    avg_fill_price         numeric     NULL
                                       CONSTRAINT orders_avg_fill_price_positive
                                       CHECK (avg_fill_price > 0 AND avg_fill_price < 'Infinity'),
    -- Commissions reported so far for this order's executions (signed: IB may report
    -- rebates; bounded like executions.commission); the executions hold which ones are
    -- still unknown.
    commission             numeric     NOT NULL DEFAULT 0
                                       CONSTRAINT orders_commission_sane
                                       CHECK (abs(commission) < 1e12),
    -- Cash this order still holds in portfolios.reserved_cash (a working buy's
    -- unfilled remainder); released only for what did not fill, after the broker
    -- confirms. portfolios.reserved_cash is the sum of these, kept in code.
    reserved_cash          numeric     NOT NULL DEFAULT 0
                                       CONSTRAINT orders_reserved_cash_non_negative
                                       CHECK (reserved_cash >= 0 AND reserved_cash < 'Infinity'),

    -- What IB reports (for reconciliation and display, never for our fill figures).
    broker_filled          numeric     NULL
                                       CONSTRAINT orders_broker_filled_non_negative
                                       CHECK (broker_filled >= 0 AND broker_filled < 'Infinity'),
    -- Unchecked on purpose: orders placed by hand in TWS report id 0, and orders
    -- bound with reqAutoOpenOrders negative ids.
    ib_order_id            bigint      NULL,
    -- NULL until IB assigns one (IB's 0 is stored as NULL).
    perm_id                bigint      NULL
                                       CONSTRAINT orders_perm_id_positive
                                       CHECK (perm_id > 0),
    -- IB's latest status string (PreSubmitted, Submitted...), kept as text so a status
    -- IB adds later is recorded, not refused.
    ib_status              text        NULL
                                       CONSTRAINT orders_ib_status_length
                                       CHECK (length(ib_status) <= 64),
    -- Why rejected, cancelled or unknown (IB's error text where there is one).
    status_message         text        NULL,

    -- The lifecycle facts the status is derived from (ibflow_order_manager.domain.lifecycle
    -- .OrderState): stored as facts, not only as the status, so that a late execution
    -- or report is applied to what was known, never re-guessed from a status string.
    filled_notional        numeric     NOT NULL DEFAULT 0
                                       CONSTRAINT orders_filled_notional_non_negative
                                       CHECK (filled_notional >= 0 AND filled_notional < 'Infinity'),
    broker_remaining       numeric     NULL
                                       CONSTRAINT orders_broker_remaining_non_negative
                                       CHECK (broker_remaining >= 0 AND broker_remaining < 'Infinity'),
    broker_outcome         text        NOT NULL DEFAULT 'none'
                                       CONSTRAINT orders_broker_outcome_known
                                       CHECK (broker_outcome IN ('none', 'cancelled', 'rejected')),
    acknowledged           boolean     NOT NULL DEFAULT false,
    cancel_requested       boolean     NOT NULL DEFAULT false,
    unknown                boolean     NOT NULL DEFAULT false,

    -- One timestamp per transition: when the order first entered each status.
    created_at             timestamptz NOT NULL DEFAULT now(),  -- PENDING
    sent_at                timestamptz NULL,                    -- handed to the bridge
    submitted_at           timestamptz NULL,
    partially_filled_at    timestamptz NULL,
    filled_at              timestamptz NULL,
    cancel_requested_at    timestamptz NULL,
    cancelled_at           timestamptz NULL,
    rejected_at            timestamptz NULL,
    unknown_at             timestamptz NULL,
    updated_at             timestamptz NOT NULL DEFAULT now(),

    -- Target of the composite foreign keys (bracket parent here; executions,
    -- recommendations): a row pointing at an order also names its portfolio, and the
    -- two must agree, so a fill can never move another portfolio's cash.
    CONSTRAINT orders_client_order_id_portfolio_unique UNIQUE (client_order_id, portfolio_id),
    CONSTRAINT orders_parent_fk
        FOREIGN KEY (parent_client_order_id, portfolio_id)
        REFERENCES orders (client_order_id, portfolio_id),
    CONSTRAINT orders_parent_not_self
        CHECK (parent_client_order_id <> client_order_id),

    -- permId is unique per account; per portfolio here because portfolios sharing an
    -- account may each record the same broker order (one of them as external). NULLs
    -- are distinct, so orders without a permId yet do not collide.
    CONSTRAINT orders_perm_id_unique_per_portfolio UNIQUE (portfolio_id, perm_id),

    -- Our own orders know all their terms (see the note on external orders above).
    CONSTRAINT orders_terms_known
        CHECK (purpose = 'external'
               OR (symbol IS NOT NULL AND side IS NOT NULL AND order_type IS NOT NULL
                   AND quantity IS NOT NULL AND tif IS NOT NULL)),
    -- Which prices each type takes (mirrors OrderTerms._check_prices): MKT none; LMT
    -- limit; STP stop; STP_LMT both; TRAIL exactly one of amount / percent and
    -- optionally trail_stop_price. Not enforced for external orders (see above).
    CONSTRAINT orders_prices_match_type
        CHECK (purpose = 'external' OR CASE order_type
            WHEN 'MKT' THEN limit_price IS NULL AND stop_price IS NULL
                            AND trailing_amount IS NULL AND trailing_percent IS NULL
                            AND trail_stop_price IS NULL
            WHEN 'LMT' THEN limit_price IS NOT NULL AND stop_price IS NULL
                            AND trailing_amount IS NULL AND trailing_percent IS NULL
                            AND trail_stop_price IS NULL
            WHEN 'STP' THEN limit_price IS NULL AND stop_price IS NOT NULL
                            AND trailing_amount IS NULL AND trailing_percent IS NULL
                            AND trail_stop_price IS NULL
            WHEN 'STP_LMT' THEN limit_price IS NOT NULL AND stop_price IS NOT NULL
                            AND trailing_amount IS NULL AND trailing_percent IS NULL
                            AND trail_stop_price IS NULL
            WHEN 'TRAIL' THEN limit_price IS NULL AND stop_price IS NULL
                            AND (trailing_amount IS NULL) <> (trailing_percent IS NULL)
            ELSE false
        END),
    -- Mirrors OrderIntent._check_purpose: entries and exits belong to a position,
    -- manual orders to none; an external order may be attributed to one later.
    CONSTRAINT orders_position_matches_purpose
        CHECK (purpose = 'external' OR (purpose = 'manual') = (position_id IS NULL)),
    CONSTRAINT orders_exit_reason_only_on_exits
        CHECK ((purpose = 'exit') = (exit_reason IS NOT NULL)),
    CONSTRAINT orders_levels_only_on_entries
        CHECK (purpose = 'entry' OR (stop_loss IS NULL AND take_profit IS NULL)),
    -- Same comparison as the contract (a long's stop is below its target).
    CONSTRAINT orders_stop_loss_below_take_profit_for_buys
        CHECK (stop_loss IS NULL OR take_profit IS NULL
               OR (stop_loss < take_profit) = (side = 'BUY')),

    -- Never more filled than ordered. Holds through a late fill after a cancel and
    -- through a modify (which may not cut the quantity below what already filled).
    -- A violation is a double-booked execution (e.g. an execId correction booked as a
    -- second fill): refused here rather than silently moving cash twice. An external
    -- order with an inferred quantity must raise it as more fills arrive.
    CONSTRAINT orders_filled_within_quantity
        CHECK (filled_quantity <= quantity),
    -- Both come from the executions: an average exists exactly when something filled.
    CONSTRAINT orders_avg_fill_price_iff_filled
        CHECK ((filled_quantity > 0) = (avg_fill_price IS NOT NULL)),
    -- The status's own timestamp is set whenever the order is in that status (the
    -- stale sweep and recovery rely on them; PENDING's is created_at).
    CONSTRAINT orders_status_timestamp_set
        CHECK (CASE status
            WHEN 'PENDING' THEN true
            WHEN 'SUBMITTED' THEN submitted_at IS NOT NULL
            WHEN 'PARTIALLY_FILLED' THEN partially_filled_at IS NOT NULL
            WHEN 'FILLED' THEN filled_at IS NOT NULL
            WHEN 'CANCEL_REQUESTED' THEN cancel_requested_at IS NOT NULL
            WHEN 'CANCELLED' THEN cancelled_at IS NOT NULL
            WHEN 'REJECTED' THEN rejected_at IS NOT NULL
            WHEN 'UNKNOWN' THEN unknown_at IS NOT NULL
            ELSE false
        END)
);

CREATE TRIGGER orders_updated_at
    BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION order_manager_set_updated_at();

-- Working (non-terminal) orders per portfolio and symbol: open-order count, cash held
-- by working buys, "no second open entry in this symbol", cancel entries on halt.
-- Partial, so it stays as small as the set of live orders however long history
-- grows. The predicate is "not terminal" (OrderStatus.is_terminal) rather than a
-- list of working statuses: the planner matches it both for queries written
-- "status NOT IN ('FILLED', 'CANCELLED', 'REJECTED')" and for ones naming some
-- working statuses ("status IN ('SUBMITTED', ...)"); the list form would only match
-- the latter.
CREATE INDEX orders_working_by_portfolio ON orders (portfolio_id, symbol)
    WHERE status NOT IN ('FILLED', 'CANCELLED', 'REJECTED');

-- Stale sweep (SUBMITTED / PARTIALLY_FILLED older than the portfolio's limit) and
-- recovery (every PENDING and UNKNOWN order); terminal orders are never looked at.
CREATE INDEX orders_stale_sweep ON orders (status, submitted_at)
    WHERE status NOT IN ('FILLED', 'CANCELLED', 'REJECTED');

-- Lookups by (portfolio_id, perm_id) use orders_perm_id_unique_per_portfolio's index.

CREATE INDEX orders_by_position ON orders (position_id)
    WHERE position_id IS NOT NULL;

CREATE INDEX orders_by_parent ON orders (parent_client_order_id)
    WHERE parent_client_order_id IS NOT NULL;

-- A portfolio's orders by time (API listings, today's orders).
CREATE INDEX orders_by_portfolio_created_at ON orders (portfolio_id, created_at);


-- ---------------------------------------------------------------------- executions

-- IB's fills, keyed by execId, so a fill replayed after a reconnect (failure mode 5)
-- is recognised and booked once. Every execution belongs to an orders row: a fill of
-- an order we do not know (placed in TWS) first gets an external orders row.
CREATE TABLE executions (
    exec_id              text        PRIMARY KEY
                                     CONSTRAINT executions_exec_id_not_blank
                                     CHECK (btrim(exec_id) <> '' AND length(exec_id) <= 128),
    client_order_id      text        NOT NULL,
    portfolio_id         text        NOT NULL,
    symbol               text        NOT NULL
                                     CONSTRAINT executions_symbol_format
                                     CHECK (length(symbol) BETWEEN 1 AND 32),
    side                 text        NOT NULL
                                     CONSTRAINT executions_side_known
                                     CHECK (side IN ('BUY', 'SELL')),
    quantity             numeric     NOT NULL
                                     CONSTRAINT executions_quantity_positive
                                     CHECK (quantity > 0 AND quantity < 'Infinity'),
    price                numeric     NOT NULL
                                     CONSTRAINT executions_price_positive
                                     CHECK (price > 0 AND price < 'Infinity'),
    executed_at          timestamptz NOT NULL,
    -- NULL when IB reported 0; ib_order_id unchecked (see orders.ib_order_id).
    perm_id              bigint      NULL
                                     CONSTRAINT executions_perm_id_positive
                                     CHECK (perm_id > 0),
    ib_order_id          bigint      NULL,
    exchange             text        NOT NULL
                                     CONSTRAINT executions_exchange_not_blank
                                     CHECK (btrim(exchange) <> '' AND length(exchange) <= 32),
    -- IB reports the commission separately (commissionReport), usually just after the
    -- fill and sometimes much later or after a reconnect (failure mode 10). NULL =
    -- not reported yet; never 0 as a placeholder, because 0 is a real commission and
    -- "unknown" must stay distinguishable so cash is corrected when it arrives.
    -- The bound is far below IB's unset sentinel (max double, ~1.8e308): a sentinel
    -- that leaked through is refused instead of wiping out the portfolio's cash.
    commission           numeric     NULL
                                     CONSTRAINT executions_commission_sane
                                     CHECK (abs(commission) < 1e12),
    commission_currency  char(3)     NULL
                                     CONSTRAINT executions_commission_currency_iso
                                     CHECK (commission_currency ~ '^[A-Z]{3}$'),
    -- IB's realised P&L of this fill; NULL when IB has none (opening fills).
    ib_realized_pnl      numeric     NULL
                                     CONSTRAINT executions_ib_realized_pnl_sane
                                     CHECK (abs(ib_realized_pnl) < 1e12),
    commission_at        timestamptz NULL,
    received_at          timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT executions_order_fk
        FOREIGN KEY (client_order_id, portfolio_id)
        REFERENCES orders (client_order_id, portfolio_id),
    -- Target of transactions' composite key: a transaction names its execution,
    -- order and portfolio, and all three must agree.
    CONSTRAINT executions_exec_id_order_unique UNIQUE (exec_id, client_order_id, portfolio_id),
    -- A commission comes with its currency and arrival time, all at once.
    CONSTRAINT executions_commission_complete
        CHECK ((commission IS NULL) = (commission_currency IS NULL)
               AND (commission IS NULL) = (commission_at IS NULL)),
    CONSTRAINT executions_realized_pnl_with_commission
        CHECK (ib_realized_pnl IS NULL OR commission IS NOT NULL)
);

CREATE INDEX executions_by_order ON executions (client_order_id);

-- A portfolio's fills by time (session figures, daily realised loss).
CREATE INDEX executions_by_portfolio_executed_at ON executions (portfolio_id, executed_at);

-- Fills whose commission is still unknown (a reconciliation can ask for them again).
CREATE INDEX executions_commission_unknown ON executions (portfolio_id)
    WHERE commission IS NULL;


-- ------------------------------------------------------------ pending_commissions

-- A commission that arrived BEFORE its execution. CommissionReported and
-- ExecutionReported are separate events; after a reconnect or a redelivery the
-- commission can be processed first. It cannot be written to executions (no row yet,
-- and inventing one would need the fill's figures), and it must not be dropped (the
-- broker will not send it again, and cash would be off by it forever). So it waits
-- here; the transaction that inserts the execution deletes its row from this table
-- (DELETE ... RETURNING) and books the commission with the fill.
--
-- No foreign key to executions (the point is that it does not exist yet). Both
-- handlers change cash and so lock the portfolio row first; that serialises them,
-- so an execution never misses a commission committed concurrently.
CREATE TABLE pending_commissions (
    exec_id       text        PRIMARY KEY
                              CONSTRAINT pending_commissions_exec_id_not_blank
                              CHECK (btrim(exec_id) <> '' AND length(exec_id) <= 128),
    portfolio_id  text        NOT NULL REFERENCES portfolios (id),
    commission    numeric     NOT NULL
                              CONSTRAINT pending_commissions_commission_sane
                              CHECK (abs(commission) < 1e12),
    currency      char(3)     NOT NULL
                              CONSTRAINT pending_commissions_currency_iso
                              CHECK (currency ~ '^[A-Z]{3}$'),
    realized_pnl  numeric     NULL
                              CONSTRAINT pending_commissions_realized_pnl_sane
                              CHECK (abs(realized_pnl) < 1e12),
    received_at   timestamptz NOT NULL DEFAULT now()
);


-- -------------------------------------------------------------------- transactions

-- The cash effect of each execution, one per execution: what cash moved and why, so
-- portfolios.cash can be explained (and rebuilt) from history. Amounts are signed
-- from the portfolio's view: a buy pays (gross < 0), a sell receives (gross > 0),
-- gross = -/+ quantity x price x multiplier. commission is 0 until the execution's
-- commission is reported (executions.commission, NULL until then, is the record of
-- whether it is known); the arrival updates commission and cash_delta together.
CREATE TABLE transactions (
    id               bigserial   PRIMARY KEY,
    exec_id          text        NOT NULL
                                 CONSTRAINT transactions_exec_id_unique UNIQUE,
    portfolio_id     text        NOT NULL,
    client_order_id  text        NOT NULL,
    -- Fills only so far; other kinds (deposits, fees, dividends) would come with a
    -- migration that also relaxes exec_id.
    kind             text        NOT NULL
                                 CONSTRAINT transactions_kind_known
                                 CHECK (kind IN ('buy', 'sell')),
    gross            numeric     NOT NULL
                                 CONSTRAINT transactions_gross_finite
                                 CHECK (gross > '-Infinity' AND gross < 'Infinity'),
    commission       numeric     NOT NULL DEFAULT 0
                                 CONSTRAINT transactions_commission_sane
                                 CHECK (abs(commission) < 1e12),
    cash_delta       numeric     NOT NULL
                                 CONSTRAINT transactions_cash_delta_finite
                                 CHECK (cash_delta > '-Infinity' AND cash_delta < 'Infinity'),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT transactions_execution_fk
        FOREIGN KEY (exec_id, client_order_id, portfolio_id)
        REFERENCES executions (exec_id, client_order_id, portfolio_id),
    -- (An unknown kind yields NULL here, so transactions_kind_known names the problem.)
    CONSTRAINT transactions_gross_sign_matches_kind
        CHECK (CASE kind WHEN 'buy' THEN gross < 0 WHEN 'sell' THEN gross > 0 END),
    -- Exact in numeric: a writer that rounds one side differently is refused.
    CONSTRAINT transactions_cash_delta_is_gross_minus_commission
        CHECK (cash_delta = gross - commission)
);

CREATE TRIGGER transactions_updated_at
    BEFORE UPDATE ON transactions
    FOR EACH ROW EXECUTE FUNCTION order_manager_set_updated_at();

CREATE INDEX transactions_by_portfolio_created_at ON transactions (portfolio_id, created_at);


-- ----------------------------------------------------------------- recommendations

-- What to enter at a session's morning entry (ibflow.contracts.recommendations), and
-- what became of each. One per portfolio, session and symbol: a repeated submit keeps
-- the first, and the entry's deterministic client order id is derived from the same
-- triple, so a re-fired session event finds the order it already placed.
CREATE TABLE recommendations (
    id               bigserial   PRIMARY KEY,
    portfolio_id     text        NOT NULL REFERENCES portfolios (id),
    session_date     date        NOT NULL,
    symbol           text        NOT NULL
                                 CONSTRAINT recommendations_symbol_format
                                 CHECK (length(symbol) BETWEEN 1 AND 32),
    side             text        NOT NULL DEFAULT 'BUY'
                                 CONSTRAINT recommendations_side_known
                                 CHECK (side IN ('BUY', 'SELL')),
    -- Size: shares, or a fraction of the portfolio's equity (0 < a <= 1).
    quantity         numeric     NULL
                                 CONSTRAINT recommendations_quantity_positive
                                 CHECK (quantity > 0 AND quantity < 'Infinity'),
    allocation       numeric     NULL
                                 CONSTRAINT recommendations_allocation_fraction
                                 CHECK (allocation > 0 AND allocation <= 1),
    entry_type       text        NOT NULL DEFAULT 'MKT'
                                 CONSTRAINT recommendations_entry_type_known
                                 CHECK (entry_type IN ('MKT', 'LMT')),
    limit_price      numeric     NULL
                                 CONSTRAINT recommendations_limit_price_positive
                                 CHECK (limit_price > 0 AND limit_price < 'Infinity'),
    stop_loss        numeric     NULL
                                 CONSTRAINT recommendations_stop_loss_positive
                                 CHECK (stop_loss > 0 AND stop_loss < 'Infinity'),
    take_profit      numeric     NULL
                                 CONSTRAINT recommendations_take_profit_positive
                                 CHECK (take_profit > 0 AND take_profit < 'Infinity'),
    -- Where it came from: 'api', 'operator', 'strategy:<name>'.
    source           text        NOT NULL DEFAULT 'api'
                                 CONSTRAINT recommendations_source_not_blank
                                 CHECK (btrim(source) <> '' AND length(source) <= 128),
    status           text        NOT NULL DEFAULT 'pending'
                                 CONSTRAINT recommendations_status_known
                                 CHECK (status IN ('pending', 'submitted', 'skipped', 'failed')),
    -- The rule and its numbers ("insufficient_cash: needs 5012.00, available 3000.00"),
    -- or what failed.
    skip_reason      text        NULL
                                 CONSTRAINT recommendations_skip_reason_not_blank
                                 CHECK (btrim(skip_reason) <> ''),
    -- The entry order it became (same portfolio, composite key below).
    client_order_id  text        NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    decided_at       timestamptz NULL,

    CONSTRAINT recommendations_one_per_symbol_and_session
        UNIQUE (portfolio_id, session_date, symbol),
    CONSTRAINT recommendations_order_fk
        FOREIGN KEY (client_order_id, portfolio_id)
        REFERENCES orders (client_order_id, portfolio_id),
    CONSTRAINT recommendations_quantity_or_allocation
        CHECK ((quantity IS NULL) <> (allocation IS NULL)),
    CONSTRAINT recommendations_limit_price_iff_lmt
        CHECK ((entry_type = 'LMT') = (limit_price IS NOT NULL)),
    CONSTRAINT recommendations_stop_loss_below_take_profit_for_buys
        CHECK (stop_loss IS NULL OR take_profit IS NULL
               OR (stop_loss < take_profit) = (side = 'BUY')),
    -- Decided exactly when it left 'pending'.
    CONSTRAINT recommendations_decided_at_iff_decided
        CHECK ((status = 'pending') = (decided_at IS NULL)),
    -- A skip or failure says why; nothing else carries a reason.
    CONSTRAINT recommendations_skip_reason_iff_skipped_or_failed
        CHECK ((status IN ('skipped', 'failed')) = (skip_reason IS NOT NULL)),
    CONSTRAINT recommendations_submitted_has_order
        CHECK (status <> 'submitted' OR client_order_id IS NOT NULL)
);


-- ----------------------------------------------------------------------- audit_log

-- Every command the order-manager handled: who (API key id, operator identity, or a
-- service), what, about what, and the result. Deliberately without foreign keys or
-- format checks on portfolio_id / client_order_id: a command refused because its
-- portfolio does not exist or its id is malformed must still be recorded, and the
-- audit insert must never be the thing that fails.
CREATE TABLE audit_log (
    id               bigserial   PRIMARY KEY,
    at               timestamptz NOT NULL DEFAULT now(),
    actor            text        NOT NULL
                                 CONSTRAINT audit_log_actor_not_blank
                                 CHECK (btrim(actor) <> ''),
    -- The command's name or subject, e.g. 'order.submit', 'trading.halt'.
    command          text        NOT NULL
                                 CONSTRAINT audit_log_command_not_blank
                                 CHECK (btrim(command) <> ''),
    -- What it was about, e.g. 'order:<client_order_id>', 'portfolio:<id>', 'all'.
    subject          text        NULL,
    portfolio_id     text        NULL,
    client_order_id  text        NULL,
    -- The command as received (secrets never go in here).
    payload          jsonb       NULL,
    result           text        NOT NULL
                                 CONSTRAINT audit_log_result_known
                                 CHECK (result IN ('accepted', 'refused', 'failed', 'duplicate')),
    -- The refusal's rule and numbers, or the failure.
    detail           text        NULL
);

-- Append-only: an audit trail that can be edited proves nothing. Services connect as
-- the tables' owner, whose privileges a REVOKE cannot really take away, so a trigger
-- refuses UPDATE, DELETE and TRUNCATE for every role, a buggy code path included.
-- A deliberate retention job would have to disable the trigger explicitly
-- (ALTER TABLE audit_log DISABLE TRIGGER ...), which is itself visible.
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

-- BRIN: rows arrive in time order, so a time-range index costs next to nothing.
CREATE INDEX audit_log_at_brin ON audit_log USING brin (at);

CREATE INDEX audit_log_by_portfolio ON audit_log (portfolio_id, at)
    WHERE portfolio_id IS NOT NULL;

CREATE INDEX audit_log_by_client_order_id ON audit_log (client_order_id)
    WHERE client_order_id IS NOT NULL;
