-- What built-in value detectors saw at a path ("value:email", "kind:boolean"), never the value:
-- classification by value must hold in later listings and policy checks, not only in the
-- call that carried the samples.
CREATE TABLE sample_signals (
    workspace_id    text NOT NULL REFERENCES workspaces (workspace_id),
    path            text NOT NULL,
    signal          text NOT NULL CHECK (signal ~ '^(value|kind):[a-z0-9-]{1,32}$'),
    PRIMARY KEY (workspace_id, path, signal)
);
