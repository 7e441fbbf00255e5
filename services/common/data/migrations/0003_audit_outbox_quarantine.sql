-- Outbox entries auditsvc refused as invalid: moved here by the relay so that delivery of the
-- rest goes on (services.common.data.outbox_relay). A row here is an alarm until an operator
-- has looked at it and removed it.
CREATE TABLE audit_outbox_quarantine (
    seq             bigint PRIMARY KEY,
    event_id        uuid NOT NULL,
    event           jsonb NOT NULL,
    reason          text NOT NULL,
    created_at      timestamptz NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
