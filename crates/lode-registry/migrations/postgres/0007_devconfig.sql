-- Remote configuration: every save of a product's configuration file is a new version;
-- the newest is current, older ones are kept as history.
CREATE TABLE product_configs (
    product_key TEXT COLLATE "C" NOT NULL REFERENCES products (product_key) ON DELETE CASCADE,
    version     BIGINT NOT NULL,
    config_id   TEXT COLLATE "C" NOT NULL UNIQUE,
    content     TEXT NOT NULL,
    size        BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (product_key, version)
);
