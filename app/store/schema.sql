-- ai-broker embedded store (SQLite). The Supabase migration mirrors this logical schema.
-- Times are epoch seconds (REAL). Idempotent: safe to run at every start.

CREATE TABLE IF NOT EXISTS schema_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS ai_brokers (
    id                   TEXT PRIMARY KEY,          -- persona slug, e.g. 'sarah-wong'
    name                 TEXT NOT NULL,
    persona_type         TEXT NOT NULL,
    title                TEXT NOT NULL,
    specialty            TEXT NOT NULL,
    is_active            INTEGER NOT NULL DEFAULT 1,
    current_workload     INTEGER NOT NULL DEFAULT 0,
    max_concurrent_chats INTEGER NOT NULL DEFAULT 100,
    total_conversations  INTEGER NOT NULL DEFAULT 0,
    messages_handled     INTEGER NOT NULL DEFAULT 0,
    handoffs             INTEGER NOT NULL DEFAULT 0,
    created_at           REAL NOT NULL,
    updated_at           REAL NOT NULL,
    CHECK (max_concurrent_chats > 0),
    CHECK (current_workload >= 0 AND current_workload <= max_concurrent_chats)
);

CREATE TABLE IF NOT EXISTS broker_conversations (
    conversation_id          INTEGER PRIMARY KEY,   -- Chatwoot display id
    broker_id                TEXT NOT NULL REFERENCES ai_brokers (id),
    contact_id               INTEGER,
    lead_score               INTEGER,
    lead_profile             TEXT,                  -- JSON LeadProfile
    status                   TEXT NOT NULL DEFAULT 'bot',  -- bot | handed_off | human
    message_count            INTEGER NOT NULL DEFAULT 0,
    handoff_reason           TEXT,
    handoff_at               REAL,
    greeting_job_id          TEXT,
    last_customer_message_at REAL,
    last_reply_at            REAL,
    assigned_at              REAL NOT NULL,
    updated_at               REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS reply_jobs (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    id                 TEXT NOT NULL UNIQUE,
    kind               TEXT NOT NULL,
    conversation_id    INTEGER NOT NULL,
    state              TEXT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    inbound_message_id INTEGER UNIQUE,
    inbound_content    TEXT,
    delivery_id        TEXT,
    broker_id          TEXT,
    capacity_held      INTEGER NOT NULL DEFAULT 0,
    merged_into        TEXT,
    lease_owner        TEXT,
    lease_expires_at   REAL,
    delay_s            REAL,
    due_at             REAL,
    escalation_reason  TEXT,
    received_at        REAL NOT NULL,
    started_at         REAL,
    send_started_at    REAL,
    finished_at        REAL,
    reply_text         TEXT,
    reply_message_id   INTEGER,
    used_fallback      INTEGER NOT NULL DEFAULT 0,
    fallback_reason    TEXT,
    error              TEXT,
    error_detail       TEXT,
    updated_at         REAL NOT NULL,
    route              TEXT NOT NULL DEFAULT 'new',  -- new | n8n
    route_reason       TEXT,
    inbound_payload    TEXT,                         -- the webhook body, to re-forward to n8n
    comparison_id      INTEGER,                      -- shadow jobs: their comparison row
    inbound_headers    TEXT,                         -- Chatwoot's headers (JSON), for n8n too
    n8n_replied_at     REAL                          -- forwarded: when n8n's reply was seen
);
CREATE INDEX IF NOT EXISTS reply_jobs_state_updated ON reply_jobs (state, updated_at);
CREATE INDEX IF NOT EXISTS reply_jobs_conversation ON reply_jobs (conversation_id, seq);
CREATE INDEX IF NOT EXISTS reply_jobs_merged_into ON reply_jobs (merged_into);
CREATE INDEX IF NOT EXISTS reply_jobs_finished ON reply_jobs (finished_at);
CREATE INDEX IF NOT EXISTS reply_jobs_received ON reply_jobs (received_at);

-- X-Chatwoot-Delivery ids already accepted (agent-bot retries reuse them); pruned after a day.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id TEXT PRIMARY KEY,
    received_at REAL NOT NULL
);

-- Sends per time window, shared by every worker process (QUEUE_RATE_LIMIT).
CREATE TABLE IF NOT EXISTS send_windows (
    window_start REAL PRIMARY KEY,
    sends        INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS worker_heartbeats (
    worker_id   TEXT PRIMARY KEY,
    hostname    TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    started_at  REAL NOT NULL,
    seen_at     REAL NOT NULL
);

-- Monotonic counters for /metrics (webhooks by outcome, ...), shared across processes.
CREATE TABLE IF NOT EXISTS metric_counters (
    name  TEXT NOT NULL,
    label TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (name, label)
);

-- The live rollout (one row); initial values come from the environment.
CREATE TABLE IF NOT EXISTS rollout_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    percentage   INTEGER NOT NULL CHECK (percentage BETWEEN 0 AND 100),
    shadow       INTEGER NOT NULL,
    n8n_enabled  INTEGER NOT NULL,
    queue_paused INTEGER NOT NULL DEFAULT 0,
    guard        TEXT NOT NULL,                    -- JSON GuardThresholds
    updated_at   REAL NOT NULL,
    updated_by   TEXT NOT NULL
);

-- Every rollout change: who, when, from, to, why, and whether the guard did it.
CREATE TABLE IF NOT EXISTS rollout_audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        REAL NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    before    TEXT NOT NULL,                       -- JSON RolloutState
    after     TEXT NOT NULL,
    reason    TEXT NOT NULL,
    automatic INTEGER NOT NULL,
    detail    TEXT                                 -- JSON, e.g. jobs cancelled by a rollback
);
CREATE INDEX IF NOT EXISTS rollout_audit_at ON rollout_audit (at);

-- n8n's reply and the new pipeline's shadow reply to the same customer message.
CREATE TABLE IF NOT EXISTS shadow_comparisons (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id      INTEGER NOT NULL,
    inbound_message_id   INTEGER NOT NULL UNIQUE,
    customer_message     TEXT NOT NULL,
    received_at          REAL NOT NULL,
    broker_id            TEXT,
    shadow_reply         TEXT,
    shadow_latency_ms    REAL,
    shadow_used_fallback INTEGER,
    n8n_reply            TEXT,
    n8n_latency_ms       REAL,
    n8n_source           TEXT,                     -- message_event (older rows: webhook_response)
    similarity           REAL,
    verdict              TEXT CHECK (verdict IN ('better', 'same', 'worse')),
    verdict_note         TEXT,
    verdict_by           TEXT,
    verdict_at           REAL
);
CREATE INDEX IF NOT EXISTS shadow_comparisons_conversation
    ON shadow_comparisons (conversation_id, id);
CREATE INDEX IF NOT EXISTS shadow_comparisons_received ON shadow_comparisons (received_at);

-- Circuit breakers (the n8n forwarder's), shared by every receiver process.
CREATE TABLE IF NOT EXISTS circuit_breakers (
    name                 TEXT PRIMARY KEY,
    position             TEXT NOT NULL,
    consecutive_failures INTEGER NOT NULL,
    opened_at            REAL,
    probe_started_at     REAL,
    version              INTEGER NOT NULL
);

-- The console's (app/store/analytics.py): each active broker's workload, sampled once a minute
-- by the worker's maintenance loop and kept a week.
CREATE TABLE IF NOT EXISTS broker_samples (
    sampled_at REAL NOT NULL,
    broker_id  TEXT NOT NULL,
    workload   INTEGER NOT NULL,
    capacity   INTEGER NOT NULL,
    PRIMARY KEY (broker_id, sampled_at)
);
CREATE INDEX IF NOT EXISTS broker_samples_at ON broker_samples (sampled_at);

-- Retries, cancellations and intake replays from the console (rollout changes and pauses go to
-- rollout_audit).
CREATE TABLE IF NOT EXISTS operator_actions (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     REAL NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS operator_actions_target ON operator_actions (target, id);
