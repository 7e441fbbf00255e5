-- Checkpoints become a chain of their own (issue 13): each signs the previous one's hash and
-- a number, and one is made every interval even when nothing new arrived, so the same
-- sequence is signed many times. The unchained checkpoints made before stay, read-only, in
-- checkpoints_v1; the first chained checkpoint of a workspace is signed only after the whole
-- chain verified from its first record.
ALTER TABLE checkpoints RENAME TO checkpoints_v1;
ALTER INDEX checkpoints_pkey RENAME TO checkpoints_v1_pkey;

CREATE TABLE checkpoints (
    workspace_id          text        NOT NULL,
    number                bigint      NOT NULL CHECK (number > 0),
    sequence              bigint      NOT NULL CHECK (sequence > 0),
    head_hash             text        NOT NULL,
    prev_checkpoint_hash  text        NOT NULL,
    signed_at             timestamptz NOT NULL,
    key_id                text        NOT NULL,
    signature             text        NOT NULL,
    -- One checkpoint per number: two replicas cannot fork the checkpoint chain.
    PRIMARY KEY (workspace_id, number)
);

CREATE INDEX checkpoints_by_sequence ON checkpoints (workspace_id, sequence);

CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Least privilege for the role auditsvc runs as: it appends checkpoints; it no longer writes
-- public keys (verification keys come from AUDITSVC_TRUSTED_KEYS_FILE, never from here) and
-- cannot add checkpoints to the old table.
GRANT SELECT, INSERT ON checkpoints TO phiseal_audit_writer;
REVOKE INSERT ON checkpoints_v1, signing_keys FROM phiseal_audit_writer;
-- Lets a service started without DATABASE_OWNER_URL check that no migration is pending.
GRANT SELECT ON schema_migrations TO phiseal_audit_writer;
