-- The signed reserve registry: one row per version, written once. The store checks
-- each new version against the previous one (signatures, link, number) before it
-- inserts it; the primary key refuses a second version with the same number, so two
-- concurrent publishers cannot both extend the chain.
CREATE TABLE reserve_registry (
    version      BIGINT PRIMARY KEY CHECK (version >= 1),
    fingerprint  TEXT NOT NULL UNIQUE,
    body         TEXT NOT NULL,
    published_at BIGINT NOT NULL
);
