-- The usage ledger: one row per answered request, and daily totals kept in the same
-- transaction so reports read days, not rows. Portable between SQLite and PostgreSQL:
-- integers are BIGINT, money DOUBLE PRECISION, flags 0/1, and no column is nullable
-- that is part of a key (empty strings stand for "none"). Request rows carry one index
-- (time): every index is paid on each insert, and rows are read newest first. A batch
-- is one transaction, so a retried write never leaves a duplicate.
CREATE TABLE IF NOT EXISTS llmhub_requests (
    id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    day TEXT NOT NULL,
    key_name TEXT NOT NULL,
    project TEXT NOT NULL,
    agent TEXT NOT NULL,
    surface TEXT NOT NULL,
    requested TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    status BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    streamed BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION,
    latency_ms BIGINT NOT NULL,
    ttft_ms BIGINT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS llmhub_requests_at ON llmhub_requests (at_ms);

CREATE TABLE IF NOT EXISTS llmhub_daily (
    day TEXT NOT NULL,
    project TEXT NOT NULL,
    agent TEXT NOT NULL,
    key_name TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    unpriced BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    reasoning_tokens BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (day, project, agent, key_name, provider, model)
);
