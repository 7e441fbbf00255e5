-- The append-only, hash-chained audit log. See README "Audit log" for the design.

-- Partitioned by recorded_at (set by auditsvc when it appends), not by the event's own
-- timestamp: recorded_at is always "now", so the partitions made ahead always cover it, and a
-- relay delivering a week-old backlog never writes into a closed month.
CREATE TABLE records (
    workspace_id   text        NOT NULL,
    sequence       bigint      NOT NULL CHECK (sequence > 0),
    event_id       uuid        NOT NULL,
    actor_user_id  text        NOT NULL,
    event_type     text        NOT NULL,
    end_user_id    text        NOT NULL,
    event_time     timestamptz NOT NULL,
    outcome        text        NOT NULL,
    target         text        NOT NULL,
    request_id     text        NOT NULL,
    service        text        NOT NULL,
    access_reason  text        NOT NULL,
    details        jsonb       NOT NULL,
    prev_hash      text        NOT NULL,
    hash           text        NOT NULL,
    recorded_at    timestamptz NOT NULL,
    -- A unique index on a partitioned table must include the partition key.
    PRIMARY KEY (workspace_id, sequence, recorded_at)
) PARTITION BY RANGE (recorded_at);

CREATE INDEX records_workspace_time ON records (workspace_id, event_time);

-- Catches anything the scheduled partition maintenance did not cover: an insert never fails
-- for lack of a partition.
CREATE TABLE records_default PARTITION OF records DEFAULT;

-- Idempotency by event_id across all partitions (see the note on the primary key above).
CREATE TABLE event_ids (
    event_id     uuid PRIMARY KEY,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

-- The newest record of each workspace's chain. Appends lock the row (FOR UPDATE), so one
-- workspace's sequence and prev_hash never fork. A cache only: verification never trusts it.
CREATE TABLE chain_heads (
    workspace_id  text PRIMARY KEY,
    sequence      bigint NOT NULL,
    head_hash     text NOT NULL
);

CREATE TABLE checkpoints (
    workspace_id  text        NOT NULL,
    sequence      bigint      NOT NULL,
    head_hash     text        NOT NULL,
    signed_at     timestamptz NOT NULL,
    key_id        text        NOT NULL,
    signature     text        NOT NULL,
    PRIMARY KEY (workspace_id, sequence, key_id)
);

-- Every public key that ever signed a checkpoint, so old checkpoints stay verifiable.
CREATE TABLE signing_keys (
    key_id          text PRIMARY KEY,
    public_key_pem  text NOT NULL,
    first_used_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Row triggers on the partitioned parent are cloned onto every partition, present and future.
CREATE TRIGGER records_append_only BEFORE UPDATE OR DELETE ON records
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
-- TRUNCATE triggers are per table: each partition gets its own (see ensure_record_partitions).
CREATE TRIGGER records_no_truncate BEFORE TRUNCATE ON records
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER records_no_truncate BEFORE TRUNCATE ON records_default
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

CREATE TRIGGER event_ids_append_only BEFORE UPDATE OR DELETE ON event_ids
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER event_ids_no_truncate BEFORE TRUNCATE ON event_ids
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER signing_keys_append_only BEFORE UPDATE OR DELETE ON signing_keys
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER signing_keys_no_truncate BEFORE TRUNCATE ON signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER chain_heads_no_delete BEFORE DELETE ON chain_heads
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER chain_heads_no_truncate BEFORE TRUNCATE ON chain_heads
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Monthly partitions (UTC) for this month and the next `months_ahead`. SECURITY DEFINER so the
-- INSERT/SELECT-only writer role can keep them coming without owning the table. Never drops.
CREATE FUNCTION ensure_record_partitions(months_ahead integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    month_start date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    part text;
    made integer := 0;
BEGIN
    -- Replicas starting together must not race to create the same partition.
    PERFORM pg_advisory_xact_lock(hashtext('phiseal.auditsvc.partitions'));
    FOR i IN 0..months_ahead LOOP
        part := 'records_' || to_char(month_start, 'YYYY_MM');
        IF to_regclass(part) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF records FOR VALUES FROM (%L) TO (%L)',
                    part,
                    month_start::timestamp AT TIME ZONE 'UTC',
                    (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC');
                EXECUTE format(
                    'CREATE TRIGGER records_no_truncate BEFORE TRUNCATE ON %I '
                    'FOR EACH STATEMENT EXECUTE FUNCTION refuse_change()', part);
                made := made + 1;
            EXCEPTION WHEN check_violation THEN
                -- Rows for this month already sit in the DEFAULT partition (maintenance was
                -- late); they stay there, which is correct, just not as cheap to archive.
                RAISE WARNING 'partition % not created: rows for it are in records_default', part;
            END;
        END IF;
        month_start := month_start + interval '1 month';
    END LOOP;
    RETURN made;
END
$$;

-- The role auditsvc works as: INSERT and SELECT on the log, nothing else. Roles are
-- cluster-wide, so creating it is idempotent.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'phiseal_audit_writer') THEN
        CREATE ROLE phiseal_audit_writer NOLOGIN;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO phiseal_audit_writer', current_schema());
END
$$;

GRANT SELECT, INSERT ON records, event_ids, checkpoints, signing_keys TO phiseal_audit_writer;
GRANT SELECT, INSERT, UPDATE ON chain_heads TO phiseal_audit_writer;
GRANT EXECUTE ON FUNCTION ensure_record_partitions(integer) TO phiseal_audit_writer;
REVOKE EXECUTE ON FUNCTION ensure_record_partitions(integer) FROM PUBLIC;

SELECT ensure_record_partitions(2);
