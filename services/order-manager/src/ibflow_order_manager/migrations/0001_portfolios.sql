-- ibflow_order_manager 0001: portfolios. order-manager owns this table (cash, risk
-- limits, trading state); gateway-bridge reads the broker connection columns.
--
-- Money is numeric (exact, read back as Decimal), never float. numeric accepts
-- 'NaN' and (PostgreSQL >= 14) 'Infinity', and NaN sorts above every number, so
-- "x >= 0" alone would let NaN in: every money column is also bounded by
-- "< 'Infinity'", which excludes both.
CREATE TABLE portfolios (
    -- Slug, same pattern as ibflow.contracts.base.PortfolioId (a NATS subject token).
    id                  text        PRIMARY KEY
                                    CONSTRAINT portfolios_id_slug
                                    CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    name                text        NOT NULL
                                    CONSTRAINT portfolios_name_not_blank
                                    CHECK (btrim(name) <> '' AND length(name) <= 200),

    -- Broker connection (read by gateway-bridge). One ib_async connection per
    -- portfolio; a client id is never shared, so two portfolios can't evict each
    -- other with error 326.
    broker_host         text        NOT NULL DEFAULT '127.0.0.1'
                                    CONSTRAINT portfolios_broker_host_not_blank
                                    CHECK (btrim(broker_host) <> '' AND length(broker_host) <= 255),
    broker_port         integer     NOT NULL
                                    CONSTRAINT portfolios_broker_port_range
                                    CHECK (broker_port BETWEEN 1 AND 65535),
    client_id           integer     NOT NULL
                                    CONSTRAINT portfolios_client_id_unique UNIQUE
                                    CONSTRAINT portfolios_client_id_non_negative
                                    CHECK (client_id >= 0),
    -- Used after error 326 (client id already in use), if configured.
    fallback_client_id  integer     NULL
                                    CONSTRAINT portfolios_fallback_client_id_unique UNIQUE
                                    CONSTRAINT portfolios_fallback_client_id_non_negative
                                    CHECK (fallback_client_id >= 0),
    -- IB account id (DU1234567 paper, U1234567 live); NULL = the gateway's only account.
    account             text        NULL
                                    CONSTRAINT portfolios_account_format
                                    CHECK (account ~ '^[A-Za-z0-9]{1,32}$'),
    is_paper            boolean     NOT NULL DEFAULT true,
    -- Live trading (live port or non-paper account) needs this explicit opt-in.
    allow_live          boolean     NOT NULL DEFAULT false,

    -- Money.
    currency            char(3)     NOT NULL DEFAULT 'USD'
                                    CONSTRAINT portfolios_currency_iso
                                    CHECK (currency ~ '^[A-Z]{3}$'),
    cash                numeric     NOT NULL DEFAULT 0
                                    CONSTRAINT portfolios_cash_non_negative
                                    CHECK (cash >= 0 AND cash < 'Infinity'),
    reserved_cash       numeric     NOT NULL DEFAULT 0
                                    CONSTRAINT portfolios_reserved_cash_non_negative
                                    CHECK (reserved_cash >= 0 AND reserved_cash < 'Infinity'),
    fractional_shares   boolean     NOT NULL DEFAULT false,

    -- Risk limits: NULL = no limit; a limit, when set, is positive (use
    -- trading_state = 'halted' to stop trading, not a zero limit).
    max_order_value     numeric     NULL
                                    CONSTRAINT portfolios_max_order_value_positive
                                    CHECK (max_order_value > 0 AND max_order_value < 'Infinity'),
    max_position_value  numeric     NULL
                                    CONSTRAINT portfolios_max_position_value_positive
                                    CHECK (max_position_value > 0
                                           AND max_position_value < 'Infinity'),
    -- A loss amount, expressed as a positive number.
    max_daily_loss      numeric     NULL
                                    CONSTRAINT portfolios_max_daily_loss_positive
                                    CHECK (max_daily_loss > 0 AND max_daily_loss < 'Infinity'),
    max_open_orders     integer     NULL
                                    CONSTRAINT portfolios_max_open_orders_positive
                                    CHECK (max_open_orders > 0),

    trading_state       text        NOT NULL DEFAULT 'active'
                                    CONSTRAINT portfolios_trading_state_known
                                    CHECK (trading_state IN ('active', 'halted')),
    enabled             boolean     NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT portfolios_fallback_differs
        CHECK (fallback_client_id IS NULL OR fallback_client_id <> client_id)
);

-- updated_at follows every UPDATE without each writer having to remember it.
CREATE FUNCTION portfolios_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER portfolios_updated_at
    BEFORE UPDATE ON portfolios
    FOR EACH ROW EXECUTE FUNCTION portfolios_set_updated_at();
