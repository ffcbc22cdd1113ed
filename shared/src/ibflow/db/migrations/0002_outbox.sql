-- ibflow.db 0002: the transactional outbox (events published after a database change
-- are not lost if the process dies between the commit and the publish). A service
-- inserts the message in the same transaction as its writes; OutboxRelay publishes
-- rows in id order with Nats-Msg-Id = msg_id and deletes them once JetStream acked.
CREATE TABLE ibflow_outbox (
    id         bigserial   PRIMARY KEY,
    subject    text        NOT NULL,
    -- Sent as Nats-Msg-Id: JetStream stores a republished row once (duplicate window).
    msg_id     text        NOT NULL,
    -- The exact bytes to publish (bytea, not jsonb: jsonb would reorder keys and
    -- reformat numbers).
    payload    bytea       NOT NULL,
    -- Other headers ({"Ibflow-Type": ..., ...}); Nats-Msg-Id comes from msg_id.
    headers    jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- No other index: the relay reads ORDER BY id LIMIT n through the primary key, and
-- the table is a queue that stays near empty.
