-- ibflow_api 0001: API keys. A key is shown once, at creation; only the SHA-256 of
-- its secret part is stored (the secret is 256 random bits, so a fast hash is enough:
-- there is nothing to brute-force that a slow KDF would protect).
--
-- A key reads "ibf_<id>_<secret>": the id (public, 12 hex characters) finds the row,
-- the secret is checked against secret_hash in constant time.
CREATE TABLE api_keys (
    id           text        PRIMARY KEY
                             CONSTRAINT api_keys_id_format CHECK (id ~ '^[0-9a-f]{12}$'),
    name         text        NOT NULL
                             CONSTRAINT api_keys_name_not_blank
                             CHECK (btrim(name) <> '' AND length(name) <= 100),
    -- read < trade < admin: each scope includes the ones before it.
    scope        text        NOT NULL
                             CONSTRAINT api_keys_scope_known
                             CHECK (scope IN ('read', 'trade', 'admin')),
    secret_hash  bytea       NOT NULL
                             CONSTRAINT api_keys_secret_hash_sha256
                             CHECK (length(secret_hash) = 32),
    created_by   text        NOT NULL DEFAULT 'cli'
                             CONSTRAINT api_keys_created_by_not_blank
                             CHECK (btrim(created_by) <> ''),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz NULL,
    last_used_at timestamptz NULL
);
