-- Gateway topology: which gateway each sub-device belongs to (at most one).
-- Rows go with either device (ON DELETE CASCADE).
CREATE TABLE topology (
    sub_iot_id     TEXT PRIMARY KEY REFERENCES devices (iot_id) ON DELETE CASCADE,
    gateway_iot_id TEXT NOT NULL REFERENCES devices (iot_id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL
);
CREATE INDEX topology_by_gateway ON topology (gateway_iot_id, sub_iot_id);
