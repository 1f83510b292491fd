-- Device groups (nested up to the configured depth), their tags and members.
-- `group_count` counts an account's groups; members go with their device (cascade).
ALTER TABLE accounts ADD COLUMN group_count BIGINT NOT NULL DEFAULT 0;

CREATE TABLE device_groups (
    id          TEXT COLLATE "C" PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    parent_id   TEXT COLLATE "C" REFERENCES device_groups (id) ON DELETE CASCADE,
    depth       BIGINT NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    description TEXT NOT NULL,
    tags        TEXT NOT NULL,          -- JSON object, mirrors group_tags
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (account_id, name)
);
CREATE INDEX device_groups_parent ON device_groups (parent_id, name);

CREATE TABLE group_tags (
    group_id  TEXT COLLATE "C" NOT NULL REFERENCES device_groups (id) ON DELETE CASCADE,
    tag_key   TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (group_id, tag_key)
);
CREATE INDEX group_tags_kv ON group_tags (tag_key, tag_value);

CREATE TABLE group_devices (
    group_id TEXT COLLATE "C" NOT NULL REFERENCES device_groups (id) ON DELETE CASCADE,
    iot_id   TEXT COLLATE "C" NOT NULL REFERENCES devices (iot_id) ON DELETE CASCADE,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, iot_id)
);
CREATE INDEX group_devices_device ON group_devices (iot_id);
