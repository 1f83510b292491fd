-- Thing-model history schema, version 1 (PostgreSQL). Times are Unix milliseconds;
-- JSON values are stored as text, exactly as serialized. Names use COLLATE "C".
-- `id` is the insertion sequence that orders records with equal times.

CREATE TABLE thing_property_history (
    id          BIGSERIAL PRIMARY KEY,
    product_key TEXT COLLATE "C" NOT NULL,
    device_name TEXT COLLATE "C" NOT NULL,
    identifier  TEXT COLLATE "C" NOT NULL,
    value       TEXT NOT NULL,
    device_time BIGINT NOT NULL,
    server_time BIGINT NOT NULL
);
CREATE INDEX thing_property_history_identifier
    ON thing_property_history (product_key, device_name, identifier, device_time, id);
CREATE INDEX thing_property_history_device
    ON thing_property_history (product_key, device_name, device_time, id);
CREATE INDEX thing_property_history_time ON thing_property_history (device_time);

CREATE TABLE thing_latest (
    product_key TEXT COLLATE "C" NOT NULL,
    device_name TEXT COLLATE "C" NOT NULL,
    identifier  TEXT COLLATE "C" NOT NULL,
    value       TEXT NOT NULL,
    device_time BIGINT NOT NULL,
    server_time BIGINT NOT NULL,
    PRIMARY KEY (product_key, device_name, identifier)
);

CREATE TABLE thing_event_history (
    id          BIGSERIAL PRIMARY KEY,
    product_key TEXT COLLATE "C" NOT NULL,
    device_name TEXT COLLATE "C" NOT NULL,
    identifier  TEXT COLLATE "C" NOT NULL,
    event_type  TEXT NOT NULL,
    output      TEXT NOT NULL,
    device_time BIGINT NOT NULL,
    server_time BIGINT NOT NULL
);
CREATE INDEX thing_event_history_device
    ON thing_event_history (product_key, device_name, device_time, id);
CREATE INDEX thing_event_history_time ON thing_event_history (device_time);

CREATE TABLE thing_service_calls (
    id          BIGSERIAL PRIMARY KEY,
    product_key TEXT COLLATE "C" NOT NULL,
    device_name TEXT COLLATE "C" NOT NULL,
    call_id     TEXT COLLATE "C" NOT NULL,
    identifier  TEXT COLLATE "C" NOT NULL,
    call_type   TEXT NOT NULL,
    input       TEXT NOT NULL,
    status      TEXT NOT NULL,
    code        BIGINT,
    output      TEXT,
    message     TEXT,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    UNIQUE (product_key, device_name, call_id)
);
CREATE INDEX thing_service_calls_device
    ON thing_service_calls (product_key, device_name, started_at, id);
CREATE INDEX thing_service_calls_time ON thing_service_calls (started_at);

-- A deleted desired value keeps its row (value NULL) so that versions never repeat.
CREATE TABLE thing_desired (
    product_key TEXT COLLATE "C" NOT NULL,
    device_name TEXT COLLATE "C" NOT NULL,
    identifier  TEXT COLLATE "C" NOT NULL,
    value       TEXT,
    version     BIGINT NOT NULL,
    time        BIGINT NOT NULL,
    PRIMARY KEY (product_key, device_name, identifier)
);

CREATE TABLE thing_device_log (
    id           BIGSERIAL PRIMARY KEY,
    product_key  TEXT COLLATE "C" NOT NULL,
    device_name  TEXT COLLATE "C" NOT NULL,
    time         BIGINT NOT NULL,
    direction    TEXT NOT NULL,
    topic        TEXT NOT NULL,
    payload      BYTEA NOT NULL,
    payload_size BIGINT NOT NULL,
    code         BIGINT NOT NULL,
    step         TEXT,
    message      TEXT,
    trace_id     TEXT NOT NULL
);
CREATE INDEX thing_device_log_device ON thing_device_log (product_key, device_name, time, id);
CREATE INDEX thing_device_log_time ON thing_device_log (time);
