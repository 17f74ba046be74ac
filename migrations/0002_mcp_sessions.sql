-- Per-session MCP endpoints. The id is the capability, so only its SHA-256 is kept;
-- credentials are sealed with XChaCha20-Poly1305 (base64 of nonce || ciphertext, the
-- id hash as associated data) and never stored in the clear.
CREATE TABLE IF NOT EXISTS llmhub_mcp_sessions (
    id_sha256 TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    servers TEXT NOT NULL,
    with_credentials TEXT NOT NULL,
    builtin BIGINT NOT NULL,
    sealed TEXT,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS llmhub_mcp_sessions_expiry ON llmhub_mcp_sessions (expires_ms);
