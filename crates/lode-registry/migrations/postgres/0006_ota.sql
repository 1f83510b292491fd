-- OTA: firmware packages (the bytes live in the OTA blob store, here only their metadata),
-- module versions reported by devices, upgrade jobs and the per-device state of each job.
-- Job settings are JSON text owned by the OTA runtime.
CREATE TABLE ota_firmware (
    id          TEXT COLLATE "C" PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    product_key TEXT NOT NULL,
    module      TEXT NOT NULL,
    version     TEXT NOT NULL,
    size        BIGINT NOT NULL,
    md5         TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    signature   TEXT,
    sign_method TEXT,
    description TEXT,
    created_at  BIGINT NOT NULL,
    UNIQUE (product_key, module, version)
);
CREATE INDEX ota_firmware_by_account ON ota_firmware (account_id, id);

CREATE TABLE ota_module_versions (
    product_key TEXT NOT NULL,
    device_name TEXT NOT NULL,
    module      TEXT NOT NULL,
    version     TEXT NOT NULL,
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (product_key, device_name, module)
);
CREATE INDEX ota_module_versions_by_version ON ota_module_versions (product_key, module, version);

CREATE TABLE ota_jobs (
    id          TEXT COLLATE "C" PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    firmware_id TEXT NOT NULL REFERENCES ota_firmware (id),
    product_key TEXT NOT NULL,
    settings    TEXT NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX ota_jobs_by_account ON ota_jobs (account_id, id);
CREATE INDEX ota_jobs_by_state ON ota_jobs (state);

CREATE TABLE ota_job_devices (
    job_id      TEXT NOT NULL REFERENCES ota_jobs (id) ON DELETE CASCADE,
    product_key TEXT COLLATE "C" NOT NULL,
    device_name TEXT COLLATE "C" NOT NULL,
    status      TEXT NOT NULL,
    attempts    BIGINT NOT NULL,
    step        BIGINT,
    detail      TEXT,
    pushed_at   BIGINT,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (job_id, product_key, device_name)
);
