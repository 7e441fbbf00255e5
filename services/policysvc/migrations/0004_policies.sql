-- Versioned encryption policies: one row per version, never updated; the newest is the head.
CREATE TABLE policy_versions (
    destination_id  text NOT NULL REFERENCES destinations (destination_id),
    version         bigint NOT NULL CHECK (version > 0),
    workspace_id    text NOT NULL REFERENCES workspaces (workspace_id),
    enabled         boolean NOT NULL,
    format          text NOT NULL CHECK (format IN ('jwe', 'segment_rsa_oaep')),
    fields          text[] NOT NULL,
    created_at      timestamptz NOT NULL,
    created_by      text NOT NULL,
    change_summary  text NOT NULL,
    -- Writers lock the destination row first; this key is the backstop against a lost race.
    PRIMARY KEY (destination_id, version)
);

CREATE INDEX policy_versions_by_workspace ON policy_versions (workspace_id);
