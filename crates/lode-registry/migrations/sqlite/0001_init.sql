-- Registry schema, version 1 (SQLite). Timestamps are Unix milliseconds (UTC).

CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    product_count BIGINT NOT NULL DEFAULT 0,
    device_count  BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL
);

CREATE TABLE access_keys (
    id         TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    enabled    BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX access_keys_account ON access_keys (account_id);

CREATE TABLE products (
    product_key          TEXT PRIMARY KEY,
    product_secret       TEXT NOT NULL,
    account_id           TEXT NOT NULL REFERENCES accounts (id),
    name                 TEXT NOT NULL,
    node_type            TEXT NOT NULL,
    data_format          TEXT NOT NULL,
    auth_type            TEXT NOT NULL,
    dynamic_registration BOOLEAN NOT NULL,
    description          TEXT NOT NULL,
    tags                 TEXT NOT NULL,          -- JSON object, mirrors product_tags
    device_count         BIGINT NOT NULL DEFAULT 0,
    created_at           BIGINT NOT NULL
);
CREATE INDEX products_account ON products (account_id, product_key);

CREATE TABLE product_tags (
    product_key TEXT NOT NULL REFERENCES products (product_key) ON DELETE CASCADE,
    tag_key     TEXT NOT NULL,
    tag_value   TEXT NOT NULL,
    PRIMARY KEY (product_key, tag_key)
);
CREATE INDEX product_tags_kv ON product_tags (tag_key, tag_value);

CREATE TABLE topic_categories (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    product_key TEXT NOT NULL REFERENCES products (product_key) ON DELETE CASCADE,
    template    TEXT NOT NULL,
    permission  TEXT NOT NULL,
    description TEXT NOT NULL,
    UNIQUE (product_key, template)
);

CREATE TABLE devices (
    iot_id                 TEXT PRIMARY KEY,
    product_key            TEXT NOT NULL REFERENCES products (product_key),
    device_name            TEXT NOT NULL,
    device_secret          TEXT NOT NULL,
    nickname               TEXT,
    state                  TEXT NOT NULL,
    activated_at           BIGINT,
    last_online_at         BIGINT,
    last_offline_at        BIGINT,
    last_ip                TEXT,
    firmware_version       TEXT,
    tags                   TEXT NOT NULL,        -- JSON object, mirrors device_tags
    dynamically_registered BOOLEAN NOT NULL,
    created_at             BIGINT NOT NULL,
    UNIQUE (product_key, device_name)
);

CREATE TABLE device_tags (
    iot_id    TEXT NOT NULL REFERENCES devices (iot_id) ON DELETE CASCADE,
    tag_key   TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (iot_id, tag_key)
);
CREATE INDEX device_tags_kv ON device_tags (tag_key, tag_value);

CREATE TABLE device_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    product_key TEXT NOT NULL,
    device_name TEXT NOT NULL,
    event       TEXT NOT NULL,
    reason      TEXT,
    ip          TEXT,
    at          BIGINT NOT NULL
);
CREATE INDEX device_events_device ON device_events (product_key, device_name, id);
