-- Documents a product carries in a draft and a published version: its thing model
-- (kind 'tsl') and its data parsing script (kind 'script').
CREATE TABLE product_documents (
    product_key  TEXT COLLATE "C" NOT NULL REFERENCES products (product_key) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    draft        TEXT,
    draft_at     BIGINT,
    published    TEXT,
    version      BIGINT NOT NULL DEFAULT 0,
    published_at BIGINT,
    PRIMARY KEY (product_key, kind)
);
