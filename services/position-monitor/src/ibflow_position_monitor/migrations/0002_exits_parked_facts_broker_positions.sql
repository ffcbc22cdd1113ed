-- ibflow_position_monitor 0002: what the running service needs besides 0001's facts.
--
-- * positions.exit_order / exit_accepted / exit_sent_at: the exact SubmitOrder of the
--   current exit, kept so that an exit recorded (CLOSING) but never acknowledged by the
--   order-manager (a crash between the commit and the request, a timeout) is re-sent
--   with the same client order id and terms: the order-manager answers a repeat as a
--   duplicate, so a re-send can never become a second order.
-- * positions.exit_refusal: why the order-manager refused the last exit for good (not a
--   transient refusal): tick exits are not retried while it is set; the close-out, a
--   flatten and new levels still are.
-- * position_parked_facts: a broker fact (status, execution) about an order that no
--   position knows yet (the order-manager's OrderBookUpdated that creates the position
--   travels through its outbox and may arrive after the bridge's events). Applied and
--   deleted when the position appears; facts of orders that never belong to a position
--   (manual orders) stay, harmless.
-- * broker_positions: the holdings of each broker snapshot, compared with our book when
--   the snapshot's BrokerSnapshotCompleted arrives.

ALTER TABLE positions
    ADD COLUMN exit_order     jsonb       NULL,
    ADD COLUMN exit_accepted  boolean     NOT NULL DEFAULT false,
    ADD COLUMN exit_sent_at   timestamptz NULL,
    ADD COLUMN exit_refusal   text        NULL
                              CONSTRAINT positions_exit_refusal_not_blank
                              CHECK (btrim(exit_refusal) <> '');

CREATE TABLE position_parked_facts (
    id               bigserial   PRIMARY KEY,
    client_order_id  text        NOT NULL,
    kind             text        NOT NULL
                                 CONSTRAINT position_parked_facts_kind_known
                                 CHECK (kind IN ('status', 'execution')),
    -- The message's Nats-Msg-Id: a redelivered fact is parked once.
    msg_id           text        NOT NULL
                                 CONSTRAINT position_parked_facts_msg_id_unique UNIQUE,
    payload          jsonb       NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX position_parked_facts_by_order ON position_parked_facts (client_order_id);

CREATE TABLE broker_positions (
    snapshot_id   uuid        NOT NULL,
    portfolio_id  text        NOT NULL
                              CONSTRAINT broker_positions_portfolio_id_slug
                              CHECK (portfolio_id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    account_id    text        NOT NULL,
    con_id        bigint      NOT NULL,
    symbol        text        NOT NULL,
    -- Signed, as IB reports it (short < 0).
    position      numeric     NOT NULL
                              CONSTRAINT broker_positions_position_finite
                              CHECK (position > '-Infinity' AND position < 'Infinity'),
    -- IB's avgCost: per contract, multiplier included; used only to price an adoption.
    avg_cost      numeric     NOT NULL
                              CONSTRAINT broker_positions_avg_cost_finite
                              CHECK (avg_cost > '-Infinity' AND avg_cost < 'Infinity'),
    reported_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (snapshot_id, account_id, con_id)
);

CREATE INDEX broker_positions_by_portfolio ON broker_positions (portfolio_id, reported_at);

-- The broker snapshots seen (BrokerSnapshotCompleted): a reconciliation without a fresh
-- snapshot compares with the latest one here. position_count NULL: the positions query
-- failed (unknown, never "none").
CREATE TABLE broker_snapshots (
    snapshot_id     uuid        PRIMARY KEY,
    portfolio_id    text        NOT NULL
                                CONSTRAINT broker_snapshots_portfolio_id_slug
                                CHECK (portfolio_id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    -- The portfolio's account: a gateway that manages several accounts reports all of
    -- them, and only this one's holdings are the portfolio's (NULL: all).
    account_id      text        NULL,
    positions_known boolean     NOT NULL,
    position_count  integer     NULL
                                CONSTRAINT broker_snapshots_position_count_non_negative
                                CHECK (position_count >= 0),
    completed_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT broker_snapshots_count_iff_known
        CHECK (positions_known = (position_count IS NOT NULL))
);

CREATE INDEX broker_snapshots_latest ON broker_snapshots (portfolio_id, completed_at DESC);
