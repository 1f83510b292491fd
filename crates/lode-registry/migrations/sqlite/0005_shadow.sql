-- Device shadows: one JSON document per device, with the version that
-- compare-and-set writes check. Deleting the device deletes its shadow.
CREATE TABLE device_shadows (
    iot_id     TEXT PRIMARY KEY REFERENCES devices (iot_id) ON DELETE CASCADE,
    document   TEXT NOT NULL,
    version    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
