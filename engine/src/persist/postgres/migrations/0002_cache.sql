-- Caseflow store, PostgreSQL schema version 2: the expiring cache (IP enrichment answers).
-- Written with synchronous_commit off: a lost entry costs one more provider call.
CREATE TABLE cache_entries (
    namespace  text   NOT NULL,
    key        text   NOT NULL,
    value      json   NOT NULL,
    expires_at bigint NOT NULL,     -- unix ms
    PRIMARY KEY (namespace, key)
);
CREATE INDEX cache_entries_expiry ON cache_entries (expires_at);
