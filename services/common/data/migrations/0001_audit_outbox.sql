-- The transactional outbox: a state change and its audit record commit together; a relay
-- delivers rows to auditsvc at least once (auditsvc deduplicates by event_id).
CREATE TABLE audit_outbox (
    seq           bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    event         jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at  timestamptz
);

CREATE INDEX audit_outbox_undelivered ON audit_outbox (seq) WHERE delivered_at IS NULL;
