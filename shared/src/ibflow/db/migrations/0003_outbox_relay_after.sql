-- ibflow.db 0003: outbox rows handed over to the relay in memory. A producer that
-- hands its committed rows straight to its process's relay (OutboxRelay.notify(staged))
-- inserts them with relay_after = now() + a grace period: the relay publishes them
-- without reading them back, and the polls of every relay leave them alone until
-- relay_after, so a second replica does not publish them at the same time. A row its
-- relay never published (the process died) is taken by the next poll after the grace.
-- Rows of a plain enqueue get '-infinity': polled at once, as before. A constant
-- default: adding the column rewrites nothing.
ALTER TABLE ibflow_outbox ADD COLUMN relay_after timestamptz NOT NULL DEFAULT '-infinity';
