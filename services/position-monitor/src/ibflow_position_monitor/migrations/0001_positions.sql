-- ibflow_position_monitor 0001: day-trade positions, the executions booked against
-- them, their latest marks, and the reports of our book against the broker's.
--
-- Same rules as order-manager's schema: money, prices and quantities are numeric
-- (exact, Decimal in Python), never float; numeric accepts 'NaN' and 'Infinity', and
-- NaN sorts above every number, so every numeric column is bounded by "< 'Infinity'"
-- (which excludes both) and signed ones by "> '-Infinity'" too. Every CHECK is named
-- <table>_<what>, so a refused row names the rule it broke.
--
-- The CHECKs are a last line of defence under the domain code
-- (ibflow_position_monitor.domain.position.PositionState), not a replacement for it:
-- they mirror its invariants and the contracts (ibflow.contracts.positions, enums.py).
--
-- No foreign key leaves this package: portfolios belong to order-manager, whose
-- migrations are not ordered with these (each package applies its own files, in any
-- order relative to the others), so a REFERENCES portfolios (id) could fail on a fresh
-- database. portfolio_id is format-checked instead; that it names a real portfolio is
-- checked in code.


-- One updated_at trigger function for every table of this package that has the column
-- (a name of its own: functions share the database's namespace with other packages).
CREATE FUNCTION position_monitor_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;


-- ----------------------------------------------------------------------- positions

-- One row per position: the facts PositionState is rebuilt from (with its executions
-- below) and the figures derived from them, stored for queries and PositionChanged.
-- The status is derived in code from the facts and stored with them in the same
-- transaction; the CHECKs below refuse a row whose status contradicts its quantities.
CREATE TABLE positions (
    -- Same pattern as ibflow.contracts.base.PositionId (and ClientOrderId).
    id                     text        PRIMARY KEY
                                       CONSTRAINT positions_id_format
                                       CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    -- No foreign key: portfolios is order-manager's table (see the header).
    portfolio_id           text        NOT NULL
                                       CONSTRAINT positions_portfolio_id_slug
                                       CHECK (portfolio_id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    symbol                 text        NOT NULL
                                       CONSTRAINT positions_symbol_format
                                       CHECK (length(symbol) BETWEEN 1 AND 32),
    -- The trading session (America/New_York calendar date) the position belongs to.
    session_date           date        NOT NULL,
    side                   text        NOT NULL
                                       CONSTRAINT positions_side_known
                                       CHECK (side IN ('LONG', 'SHORT')),
    status                 text        NOT NULL DEFAULT 'PENDING'
                                       CONSTRAINT positions_status_known
                                       CHECK (status IN ('PENDING', 'OPEN', 'CLOSING', 'CLOSED', 'CANCELLED')),
    -- Adopted from the broker (opened outside ibflow; found by reconciliation). Its
    -- entry is a stand-in ('adopt:<id>', never sent to IB) at the broker's avgCost.
    external               boolean     NOT NULL DEFAULT false,

    -- Contract multiplier (1 for stocks): P&L = price difference x shares x multiplier.
    multiplier             numeric     NOT NULL DEFAULT 1
                                       CONSTRAINT positions_multiplier_positive
                                       CHECK (multiplier > 0 AND multiplier < 'Infinity'),
    -- The entry order's quantity: the most the entry may buy.
    planned_quantity       numeric     NOT NULL
                                       CONSTRAINT positions_planned_quantity_positive
                                       CHECK (planned_quantity > 0 AND planned_quantity < 'Infinity'),
    -- Held now: entry fills minus exit fills (sums of position_executions, never IB's
    -- status figures: failure mode 11).
    quantity               numeric     NOT NULL DEFAULT 0
                                       CONSTRAINT positions_quantity_non_negative
                                       CHECK (quantity >= 0 AND quantity < 'Infinity'),
    entry_quantity         numeric     NOT NULL DEFAULT 0
                                       CONSTRAINT positions_entry_quantity_non_negative
                                       CHECK (entry_quantity >= 0 AND entry_quantity < 'Infinity'),
    exit_quantity          numeric     NOT NULL DEFAULT 0
                                       CONSTRAINT positions_exit_quantity_non_negative
                                       CHECK (exit_quantity >= 0 AND exit_quantity < 'Infinity'),
    -- Sums of shares x price of the entry / exit fills (no multiplier), exact.
    entry_notional         numeric     NOT NULL DEFAULT 0
                                       CONSTRAINT positions_entry_notional_non_negative
                                       CHECK (entry_notional >= 0 AND entry_notional < 'Infinity'),
    exit_notional          numeric     NOT NULL DEFAULT 0
                                       CONSTRAINT positions_exit_notional_non_negative
                                       CHECK (exit_notional >= 0 AND exit_notional < 'Infinity'),
    -- Our averages, from our fills: notional / quantity, commission excluded. NOT IB's
    -- avgCost, which includes the multiplier, and in updatePortfolio the commission
    -- (failure mode 12); IB's figure is never stored here.
    avg_entry_price        numeric     NULL
                                       CONSTRAINT positions_avg_entry_price_positive
                                       CHECK (avg_entry_price > 0 AND avg_entry_price < 'Infinity'),
    avg_exit_price         numeric     NULL
                                       CONSTRAINT positions_avg_exit_price_positive
                                       CHECK (avg_exit_price > 0 AND avg_exit_price < 'Infinity'),

    -- Protective levels watched by the monitor on every tick (not sent to IB).
    stop_loss              numeric     NULL
                                       CONSTRAINT positions_stop_loss_positive
                                       CHECK (stop_loss > 0 AND stop_loss < 'Infinity'),
    take_profit            numeric     NULL
                                       CONSTRAINT positions_take_profit_positive
                                       CHECK (take_profit > 0 AND take_profit < 'Infinity'),

    -- The entry order (order-manager's orders.client_order_id; no foreign key, see the
    -- header). One position per entry order.
    entry_client_order_id  text        NOT NULL
                                       CONSTRAINT positions_entry_client_order_id_unique UNIQUE
                                       CONSTRAINT positions_entry_client_order_id_format
                                       CHECK (entry_client_order_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    -- The entry order ended at the broker (cancelled, rejected, filled), and IB's
    -- filled count then: the position waits for executions still in flight.
    entry_done             boolean     NOT NULL DEFAULT false,
    entry_broker_filled    numeric     NOT NULL DEFAULT 0
                                       CONSTRAINT positions_entry_broker_filled_non_negative
                                       CHECK (entry_broker_filled >= 0 AND entry_broker_filled < 'Infinity'),

    -- Every exit order the position had, oldest first (a cancelled or rejected exit is
    -- retried as 'exit:<id>:2', ...), and the current one, which is the last of them.
    -- The array lets a late fill of an earlier attempt be recognised as such.
    exit_client_order_ids  text[]      NOT NULL DEFAULT '{}',
    exit_client_order_id   text        NULL
                                       CONSTRAINT positions_exit_client_order_id_format
                                       CHECK (exit_client_order_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    exit_reason            text        NULL
                                       CONSTRAINT positions_exit_reason_known
                                       CHECK (exit_reason IN ('stop', 'target', 'close_out', 'manual', 'external')),
    -- The current exit works at the broker; once it ended, IB's filled count for it.
    exit_working           boolean     NOT NULL DEFAULT false,
    exit_broker_filled     numeric     NOT NULL DEFAULT 0
                                       CONSTRAINT positions_exit_broker_filled_non_negative
                                       CHECK (exit_broker_filled >= 0 AND exit_broker_filled < 'Infinity'),

    -- Realized P&L so far: the sold-back shares' result x multiplier, minus every
    -- commission known so far (both sides). A late commission updates it, also after
    -- CLOSED. Signed.
    realized_pnl           numeric     NOT NULL DEFAULT 0
                                       CONSTRAINT positions_realized_pnl_finite
                                       CHECK (realized_pnl > '-Infinity' AND realized_pnl < 'Infinity'),
    -- Sum of the known commissions (signed: IB may report rebates), and how many fills
    -- still wait for theirs (0 and CLOSED: the realized P&L is final).
    commissions            numeric     NOT NULL DEFAULT 0
                                       CONSTRAINT positions_commissions_sane
                                       CHECK (abs(commissions) < 1e12),
    commissions_pending    integer     NOT NULL DEFAULT 0
                                       CONSTRAINT positions_commissions_pending_non_negative
                                       CHECK (commissions_pending >= 0),

    -- First entry into OPEN (kept if an exit is cancelled and the position re-opens);
    -- entry into CLOSED (cleared if a late entry fill re-opens it).
    opened_at              timestamptz NULL,
    closed_at              timestamptz NULL,
    -- +1 per transition; PositionChanged carries it (consumers keep the highest).
    revision               bigint      NOT NULL DEFAULT 1
                                       CONSTRAINT positions_revision_positive
                                       CHECK (revision >= 1),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),

    -- Target of reconciliation_reports' composite key: a report naming an adopted
    -- position also names its portfolio, and the two must agree.
    CONSTRAINT positions_id_portfolio_unique UNIQUE (id, portfolio_id),

    CONSTRAINT positions_quantity_is_entries_minus_exits
        CHECK (quantity = entry_quantity - exit_quantity),
    CONSTRAINT positions_entry_within_planned
        CHECK (entry_quantity <= planned_quantity),
    -- An average exists exactly when something filled on that side, and a notional
    -- only then.
    CONSTRAINT positions_avg_entry_price_iff_entered
        CHECK ((entry_quantity > 0) = (avg_entry_price IS NOT NULL)),
    CONSTRAINT positions_avg_exit_price_iff_exited
        CHECK ((exit_quantity > 0) = (avg_exit_price IS NOT NULL)),
    CONSTRAINT positions_notional_only_with_fills
        CHECK ((entry_quantity > 0 OR entry_notional = 0) AND (exit_quantity > 0 OR exit_notional = 0)),
    -- A long's stop is below its target, a short's above (as the domain's InvalidLevels).
    CONSTRAINT positions_levels_match_side
        CHECK (stop_loss IS NULL OR take_profit IS NULL
               OR (side = 'LONG' AND stop_loss < take_profit)
               OR (side = 'SHORT' AND stop_loss > take_profit)),
    -- The status agrees with the quantities (PositionState.status): nothing bought is
    -- PENDING or CANCELLED; something held is OPEN or CLOSING; all sold back is CLOSED.
    CONSTRAINT positions_status_matches_quantities
        CHECK (CASE status
            WHEN 'PENDING' THEN entry_quantity = 0
            WHEN 'CANCELLED' THEN entry_quantity = 0 AND NOT exit_working
            WHEN 'OPEN' THEN quantity > 0 AND NOT exit_working
            WHEN 'CLOSING' THEN quantity > 0
            WHEN 'CLOSED' THEN entry_quantity > 0 AND quantity = 0 AND NOT exit_working
            ELSE false
        END),
    CONSTRAINT positions_exit_client_order_id_is_latest
        CHECK (exit_client_order_id IS NOT DISTINCT FROM
               exit_client_order_ids[cardinality(exit_client_order_ids)]),
    CONSTRAINT positions_closing_has_exit
        CHECK (status <> 'CLOSING' OR exit_client_order_id IS NOT NULL),
    CONSTRAINT positions_exit_working_has_exit
        CHECK (NOT exit_working OR exit_client_order_id IS NOT NULL),
    CONSTRAINT positions_exit_reason_has_exit
        CHECK (exit_reason IS NULL OR exit_client_order_id IS NOT NULL),
    CONSTRAINT positions_exit_client_order_id_not_entry
        CHECK (exit_client_order_id <> entry_client_order_id),
    -- The stamps follow the status (opened_at stays once set: a position that was open
    -- keeps when it opened).
    CONSTRAINT positions_opened_at_once_open
        CHECK (status NOT IN ('OPEN', 'CLOSING', 'CLOSED') OR opened_at IS NOT NULL),
    CONSTRAINT positions_closed_at_iff_closed
        CHECK ((status = 'CLOSED') = (closed_at IS NOT NULL))
);

CREATE TRIGGER positions_updated_at
    BEFORE UPDATE ON positions
    FOR EACH ROW EXECUTE FUNCTION position_monitor_set_updated_at();

-- At most one active position per portfolio, symbol and session: a re-fired morning
-- entry or a second replica cannot open a second one, and an adoption in a symbol we
-- already hold is refused (it is a quantity mismatch, not an unknown holding). Partial,
-- so it holds only what is live; closed and cancelled history does not count. The
-- predicate is the list of active statuses (domain ACTIVE_STATUSES).
CREATE UNIQUE INDEX positions_one_active_per_symbol
    ON positions (portfolio_id, symbol, session_date)
    WHERE status IN ('PENDING', 'OPEN', 'CLOSING');

-- A portfolio's positions by session (API listings, the close-out, the book).
CREATE INDEX positions_by_portfolio_session ON positions (portfolio_id, session_date);

-- Joining the bridge's order events to a position by client order id: the entry has
-- its unique index; exits are looked up with "exit_client_order_ids @> ARRAY[$1]".
CREATE INDEX positions_by_exit_client_order_ids ON positions USING gin (exit_client_order_ids);


-- ------------------------------------------------------------- position_executions

-- IB's fills booked against positions, keyed by execId, so a fill replayed after a
-- reconnect or redelivered (failure mode 5) is booked once: the insert that conflicts
-- on the key is the duplicate.
--
-- A row may also be a commission that arrived BEFORE its fill (failure mode 10):
-- CommissionReported carries only the execId, so it cannot be attributed to a position
-- yet, and it must not be dropped (IB will not send it again). It is stored with only
-- exec_id and the commission; the fill completes the row (position_id, order, role,
-- side, quantity, price, executed_at all at once) and books the commission with it.
-- Commissions of executions that never belong to a position (manual orders) stay as
-- such rows; they are harmless and may be deleted after the session.
CREATE TABLE position_executions (
    exec_id          text        PRIMARY KEY
                                 CONSTRAINT position_executions_exec_id_not_blank
                                 CHECK (btrim(exec_id) <> '' AND length(exec_id) <= 128),
    position_id      text        NULL
                                 CONSTRAINT position_executions_position_fk REFERENCES positions (id),
    client_order_id  text        NULL
                                 CONSTRAINT position_executions_client_order_id_format
                                 CHECK (client_order_id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    -- entry: the position's entry order (grows it); exit: any other order of it.
    role             text        NULL
                                 CONSTRAINT position_executions_role_known
                                 CHECK (role IN ('entry', 'exit')),
    side             text        NULL
                                 CONSTRAINT position_executions_side_known
                                 CHECK (side IN ('BUY', 'SELL')),
    quantity         numeric     NULL
                                 CONSTRAINT position_executions_quantity_positive
                                 CHECK (quantity > 0 AND quantity < 'Infinity'),
    price            numeric     NULL
                                 CONSTRAINT position_executions_price_positive
                                 CHECK (price > 0 AND price < 'Infinity'),
    executed_at      timestamptz NULL,
    -- NULL until IB reports it, never 0 as a placeholder: 0 is a real commission and
    -- "unknown" must stay visible so realized P&L is corrected when it arrives. The
    -- bound refuses IB's unset sentinel (max double, ~1.8e308).
    commission       numeric     NULL
                                 CONSTRAINT position_executions_commission_sane
                                 CHECK (abs(commission) < 1e12),
    commission_at    timestamptz NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),

    -- A fill is booked whole or not at all.
    CONSTRAINT position_executions_fill_complete
        CHECK ((position_id IS NULL) = (client_order_id IS NULL)
               AND (position_id IS NULL) = (role IS NULL)
               AND (position_id IS NULL) = (side IS NULL)
               AND (position_id IS NULL) = (quantity IS NULL)
               AND (position_id IS NULL) = (price IS NULL)
               AND (position_id IS NULL) = (executed_at IS NULL)),
    -- A row without its fill exists only to hold an early commission.
    CONSTRAINT position_executions_fill_or_commission
        CHECK (position_id IS NOT NULL OR commission IS NOT NULL),
    CONSTRAINT position_executions_commission_at_with_commission
        CHECK ((commission IS NULL) = (commission_at IS NULL))
);

CREATE INDEX position_executions_by_position ON position_executions (position_id)
    WHERE position_id IS NOT NULL;


-- ------------------------------------------------------------------ position_marks

-- The latest mark of each position (last trade, else mid) and its unrealized P&L, for
-- the API / WebSocket and metrics. One row per position, overwritten; writers keep the
-- newest ("ON CONFLICT ... DO UPDATE ... WHERE position_marks.marked_at <=
-- EXCLUDED.marked_at"), so a late write of an older tick never replaces a newer one.
CREATE TABLE position_marks (
    position_id     text        PRIMARY KEY
                                CONSTRAINT position_marks_position_fk REFERENCES positions (id),
    mark_price      numeric     NOT NULL
                                CONSTRAINT position_marks_mark_price_positive
                                CHECK (mark_price > 0 AND mark_price < 'Infinity'),
    source          text        NOT NULL
                                CONSTRAINT position_marks_source_known
                                CHECK (source IN ('last', 'mid')),
    -- The quantity held when marked.
    quantity        numeric     NOT NULL
                                CONSTRAINT position_marks_quantity_non_negative
                                CHECK (quantity >= 0 AND quantity < 'Infinity'),
    -- Gross of commissions (they are in realized_pnl). Signed.
    unrealized_pnl  numeric     NOT NULL
                                CONSTRAINT position_marks_unrealized_pnl_finite
                                CHECK (unrealized_pnl > '-Infinity' AND unrealized_pnl < 'Infinity'),
    -- Marked from delayed data (shown as such; never used for exits anyway).
    delayed         boolean     NOT NULL DEFAULT false,
    -- The tick's time, not the write's.
    marked_at       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT position_marks_flat_is_zero
        CHECK (quantity > 0 OR unrealized_pnl = 0)
);

CREATE TRIGGER position_marks_updated_at
    BEFORE UPDATE ON position_marks
    FOR EACH ROW EXECUTE FUNCTION position_monitor_set_updated_at();


-- ---------------------------------------------------------- reconciliation_reports

-- Each difference found between our book and a broker snapshot, per portfolio and
-- symbol (signed quantities: short < 0). Only known snapshots produce rows: when the
-- broker's positions query failed nothing is concluded (an unknown holding is never
-- read as flat), so broker is NOT NULL here.
CREATE TABLE reconciliation_reports (
    id                   bigserial   PRIMARY KEY,
    portfolio_id         text        NOT NULL
                                     CONSTRAINT reconciliation_reports_portfolio_id_slug
                                     CHECK (portfolio_id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    symbol               text        NOT NULL
                                     CONSTRAINT reconciliation_reports_symbol_format
                                     CHECK (length(symbol) BETWEEN 1 AND 32),
    ours                 numeric     NOT NULL
                                     CONSTRAINT reconciliation_reports_ours_finite
                                     CHECK (ours > '-Infinity' AND ours < 'Infinity'),
    broker               numeric     NOT NULL
                                     CONSTRAINT reconciliation_reports_broker_finite
                                     CHECK (broker > '-Infinity' AND broker < 'Infinity'),
    -- Broker minus ours (as ReconciliationItem.drift).
    difference           numeric     NOT NULL,
    kind                 text        NOT NULL
                                     CONSTRAINT reconciliation_reports_kind_known
                                     CHECK (kind IN ('missing_at_broker', 'unknown_to_us', 'quantity_mismatch')),
    -- We had a position in the symbol whose fills may still have been in flight: the
    -- difference may be our own fill, so nothing was adopted from this row.
    settling             boolean     NOT NULL DEFAULT false,
    -- The BrokerSnapshotCompleted compared against (NULL: a holding reported outside a
    -- snapshot).
    snapshot_id          uuid        NULL,
    -- The external position an unknown holding was adopted as.
    adopted_position_id  text        NULL,
    detected_at          timestamptz NOT NULL DEFAULT now(),
    resolved             boolean     NOT NULL DEFAULT false,
    resolved_at          timestamptz NULL,
    -- How (adopted, corrected by hand, gone at the next reconciliation...).
    resolution           text        NULL
                                     CONSTRAINT reconciliation_reports_resolution_not_blank
                                     CHECK (btrim(resolution) <> ''),

    CONSTRAINT reconciliation_reports_difference_is_broker_minus_ours
        CHECK (difference = broker - ours),
    CONSTRAINT reconciliation_reports_differs
        CHECK (difference <> 0),
    -- (An unknown kind yields NULL here, so reconciliation_reports_kind_known names it.)
    CONSTRAINT reconciliation_reports_kind_matches_quantities
        CHECK (CASE kind
            WHEN 'missing_at_broker' THEN broker = 0 AND ours <> 0
            WHEN 'unknown_to_us' THEN ours = 0 AND broker <> 0
            WHEN 'quantity_mismatch' THEN ours <> 0 AND broker <> 0
        END),
    CONSTRAINT reconciliation_reports_resolved_at_iff_resolved
        CHECK (resolved = (resolved_at IS NOT NULL)),
    CONSTRAINT reconciliation_reports_adoption_only_when_unknown
        CHECK (adopted_position_id IS NULL OR kind = 'unknown_to_us'),
    CONSTRAINT reconciliation_reports_adopted_position_fk
        FOREIGN KEY (adopted_position_id, portfolio_id) REFERENCES positions (id, portfolio_id),
    -- Re-processing the same snapshot (a redelivery, a second replica) reports each
    -- symbol once. NULL snapshot ids are distinct, so ad-hoc reports are not merged.
    CONSTRAINT reconciliation_reports_one_per_snapshot_symbol
        UNIQUE (portfolio_id, snapshot_id, symbol)
);

-- Open drift per portfolio (the metric, the API); resolved history is not scanned.
CREATE INDEX reconciliation_reports_unresolved ON reconciliation_reports (portfolio_id, symbol)
    WHERE NOT resolved;

CREATE INDEX reconciliation_reports_by_portfolio_detected_at
    ON reconciliation_reports (portfolio_id, detected_at);
