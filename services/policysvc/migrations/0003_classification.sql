-- PII classification per workspace: custom matchers, path overrides, and what samples showed.
-- Sample values are never stored: only path names, and which value matcher a path's value hit.
CREATE TABLE matchers (
    seq             bigserial UNIQUE,
    matcher_id      text PRIMARY KEY,
    workspace_id    text NOT NULL REFERENCES workspaces (workspace_id),
    name            text NOT NULL,
    target          text NOT NULL CHECK (target IN ('key', 'value')),
    kind            text NOT NULL CHECK (kind IN ('exact', 'regex')),
    pattern         text NOT NULL,
    classification  text NOT NULL CHECK (classification IN ('red', 'yellow', 'green')),
    created_at      timestamptz NOT NULL,
    created_by      text NOT NULL
);

CREATE INDEX matchers_by_workspace ON matchers (workspace_id, seq);

CREATE TABLE classification_overrides (
    workspace_id    text NOT NULL REFERENCES workspaces (workspace_id),
    path            text NOT NULL,
    classification  text NOT NULL CHECK (classification IN ('red', 'yellow', 'green')),
    set_by          text NOT NULL,
    set_at          timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, path)
);

CREATE TABLE sample_paths (
    workspace_id    text NOT NULL REFERENCES workspaces (workspace_id),
    path            text NOT NULL,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, path)
);

-- "A value sampled at path matched value matcher M": removed with the matcher.
CREATE TABLE value_matches (
    workspace_id    text NOT NULL,
    path            text NOT NULL,
    matcher_id      text NOT NULL REFERENCES matchers (matcher_id) ON DELETE CASCADE,
    PRIMARY KEY (workspace_id, path, matcher_id)
);
