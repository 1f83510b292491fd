-- Rules of the rules engine and the named destinations their actions forward to.
-- Actions and destination settings are JSON text owned by the rules runtime.
ALTER TABLE accounts ADD COLUMN rule_count BIGINT NOT NULL DEFAULT 0;

CREATE TABLE rules (
    id           TEXT COLLATE "C" PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    sql          TEXT NOT NULL,
    enabled      BOOLEAN NOT NULL,
    actions      TEXT NOT NULL,
    error_action TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX rules_by_account ON rules (account_id, id);

CREATE TABLE destinations (
    id         TEXT COLLATE "C" PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    config     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (account_id, name)
);
