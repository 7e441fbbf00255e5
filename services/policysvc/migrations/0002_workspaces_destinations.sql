-- Workspaces (with their HIPAA eligibility) and the destinations inside them.
CREATE TABLE workspaces (
    workspace_id    text PRIMARY KEY,
    name            text NOT NULL,
    created_at      timestamptz NOT NULL,
    created_by      text NOT NULL,
    hipaa_eligible  boolean NOT NULL DEFAULT false,
    -- A reference to the signed business associate agreement (an id, never its content).
    baa_reference   text NOT NULL DEFAULT '',
    hipaa_set_by    text NOT NULL DEFAULT '',
    hipaa_set_at    timestamptz
);

CREATE TABLE destinations (
    -- seq orders listings and backs page tokens; ids are random.
    seq             bigserial UNIQUE,
    -- A key id is "<destination_id>.v<version>": a destination id never holds a dot.
    destination_id  text PRIMARY KEY CHECK (strpos(destination_id, '.') = 0),
    workspace_id    text NOT NULL REFERENCES workspaces (workspace_id),
    name            text NOT NULL,
    type            text NOT NULL,
    created_at      timestamptz NOT NULL,
    created_by      text NOT NULL,
    CONSTRAINT destinations_name_unique UNIQUE (workspace_id, name)
);

CREATE INDEX destinations_by_workspace ON destinations (workspace_id, seq);
