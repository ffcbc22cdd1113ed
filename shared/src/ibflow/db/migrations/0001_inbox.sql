-- ibflow.db 0001: the inbox of processed message ids (exactly-once effects over
-- at-least-once delivery). A handler claims (consumer, msg_id) in the same
-- transaction as its own writes; a replayed message finds its row and is a no-op.
CREATE TABLE ibflow_inbox (
    consumer    text        NOT NULL,
    msg_id      text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, msg_id)
);

-- For prune_inbox(): rows arrive in received_at order, so a BRIN index is tiny
-- and costs next to nothing on the insert-per-message hot path.
CREATE INDEX ibflow_inbox_received_at_brin ON ibflow_inbox USING brin (received_at);
