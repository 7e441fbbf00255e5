-- Destination key versions. Public material and metadata only: a private key never reaches
-- this table (or any other); request ids and challenge answers are kept as SHA-256 hashes.
CREATE TABLE key_versions (
    destination_id      text        NOT NULL,
    version             integer     NOT NULL CHECK (version > 0),
    workspace_id        text        NOT NULL,
    algorithm           text        NOT NULL
        CHECK (algorithm IN ('x25519', 'rsa-2048', 'rsa-3072', 'rsa-4096')),
    state               text        NOT NULL
        CHECK (state IN ('pending', 'active', 'retired', 'expired')),
    origin              text        NOT NULL CHECK (origin IN ('generated', 'imported')),
    public_key_pem      text        NOT NULL,
    public_key_jwk      text        NOT NULL,
    fingerprint_sha256  text        NOT NULL,
    created_at          timestamptz NOT NULL,
    created_by          text        NOT NULL,
    activated_at        timestamptz,
    retired_at          timestamptz,
    expired_at          timestamptz,
    confirm_by          timestamptz,
    request_hash        bytea,
    challenge_hash      bytea,
    PRIMARY KEY (destination_id, version),
    CHECK (state <> 'pending' OR (confirm_by IS NOT NULL AND challenge_hash IS NOT NULL))
);

-- At most one version encrypts, and at most one waits for confirmation, per destination.
CREATE UNIQUE INDEX key_versions_one_active ON key_versions (destination_id)
    WHERE state = 'active';
CREATE UNIQUE INDEX key_versions_one_pending ON key_versions (destination_id)
    WHERE state = 'pending';
CREATE UNIQUE INDEX key_versions_request ON key_versions (destination_id, request_hash)
    WHERE request_hash IS NOT NULL;
-- The expiry sweep.
CREATE INDEX key_versions_pending_deadline ON key_versions (confirm_by)
    WHERE state = 'pending';
