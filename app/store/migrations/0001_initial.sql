-- ai-broker on Supabase (PostgreSQL 15+): tables, constraints, indexes and the functions that
-- make every multi-step update atomic. Applied by `ai-broker db init` (or pasted into the
-- Supabase SQL editor); safe to run again.
--
-- The logical schema is the embedded SQLite store's (app/store/schema.sql). Times are epoch
-- seconds in double precision, as in SQLite: the exact floats the code passes in come back out
-- (PostgREST writes float8 as JSON numbers), so both stores return identical records.
--
-- The Supabase store calls the functions through PostgREST's /rpc: one HTTP request is one
-- transaction. Inside them locks are always taken in one order, so concurrent calls queue
-- instead of deadlocking:
--   conversation (transaction advisory lock) -> conversation row -> job rows by seq -> brokers by id
--
-- Everything lives in `public` (the schema Supabase exposes); functions are prefixed
-- `ai_broker_` so they cannot collide with a shared project's own. Only `service_role` may call
-- them or read the tables (row level security on, no policies: anon keys see nothing).

-- == tables ====================================================================================

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS schema_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE IF NOT EXISTS ai_brokers (
    id                   text PRIMARY KEY,              -- persona slug, e.g. 'sarah-wong'
    seq                  bigint GENERATED ALWAYS AS IDENTITY,  -- listing order (SQLite's rowid)
    name                 text NOT NULL,
    persona_type         text NOT NULL,
    title                text NOT NULL,
    specialty            text NOT NULL,
    is_active            boolean NOT NULL DEFAULT true,
    current_workload     integer NOT NULL DEFAULT 0,
    max_concurrent_chats integer NOT NULL DEFAULT 100,
    total_conversations  integer NOT NULL DEFAULT 0,
    messages_handled     integer NOT NULL DEFAULT 0,
    handoffs             integer NOT NULL DEFAULT 0,
    created_at           double precision NOT NULL,
    updated_at           double precision NOT NULL,
    CONSTRAINT ai_brokers_capacity_positive CHECK (max_concurrent_chats > 0),
    -- The last line of defence for capacity: no bug can oversell a broker or go below zero.
    CONSTRAINT ai_brokers_workload_within_capacity
        CHECK (current_workload >= 0 AND current_workload <= max_concurrent_chats)
);

CREATE TABLE IF NOT EXISTS broker_conversations (
    conversation_id          bigint PRIMARY KEY,        -- Chatwoot display id
    broker_id                text NOT NULL REFERENCES ai_brokers (id),
    contact_id               bigint,
    lead_score               integer,
    lead_profile             jsonb,                     -- LeadProfile
    status                   text NOT NULL DEFAULT 'bot'
        CONSTRAINT broker_conversations_status CHECK (status IN ('bot', 'handed_off', 'human')),
    message_count            integer NOT NULL DEFAULT 0,
    handoff_reason           text,
    handoff_at               double precision,
    greeting_job_id          text,
    last_customer_message_at double precision,
    last_reply_at            double precision,
    assigned_at              double precision NOT NULL,
    updated_at               double precision NOT NULL
);

CREATE TABLE IF NOT EXISTS reply_jobs (
    seq                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                 text NOT NULL UNIQUE,
    kind               text NOT NULL
        CONSTRAINT reply_jobs_kind CHECK (kind IN ('reply', 'greeting', 'shadow')),
    conversation_id    bigint NOT NULL,
    state              text NOT NULL
        CONSTRAINT reply_jobs_state CHECK (state IN (
            'queued', 'waiting', 'running', 'forwarding', 'sent', 'handed_off', 'merged',
            'skipped', 'failed', 'cancelled', 'recorded', 'forwarded')),
    attempts           integer NOT NULL DEFAULT 0,
    inbound_message_id bigint UNIQUE,                   -- the message dedupe
    inbound_content    text,
    delivery_id        text,
    broker_id          text,
    capacity_held      boolean NOT NULL DEFAULT false,
    merged_into        text,
    lease_owner        text,
    lease_expires_at   double precision,
    delay_s            double precision,
    due_at             double precision,
    escalation_reason  text,
    received_at        double precision NOT NULL,
    started_at         double precision,
    send_started_at    double precision,
    finished_at        double precision,
    reply_text         text,
    reply_message_id   bigint,
    used_fallback      boolean NOT NULL DEFAULT false,
    fallback_reason    text,
    error              text,
    error_detail       text,
    updated_at         double precision NOT NULL,
    route              text NOT NULL DEFAULT 'new'
        CONSTRAINT reply_jobs_route CHECK (route IN ('new', 'n8n')),
    route_reason       text,
    inbound_payload    text,                            -- the webhook body, to re-forward to n8n
    comparison_id      bigint,                          -- shadow jobs: their comparison row
    CONSTRAINT reply_jobs_held_needs_broker CHECK (NOT capacity_held OR broker_id IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS reply_jobs_state_updated ON reply_jobs (state, updated_at);
CREATE INDEX IF NOT EXISTS reply_jobs_conversation ON reply_jobs (conversation_id, seq);
CREATE INDEX IF NOT EXISTS reply_jobs_merged_into ON reply_jobs (merged_into);
CREATE INDEX IF NOT EXISTS reply_jobs_finished ON reply_jobs (finished_at);
CREATE INDEX IF NOT EXISTS reply_jobs_received ON reply_jobs (received_at);
CREATE INDEX IF NOT EXISTS reply_jobs_running_lease ON reply_jobs (lease_expires_at)
    WHERE state = 'running';

-- X-Chatwoot-Delivery ids already accepted (agent-bot retries reuse them); pruned after a day.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id text PRIMARY KEY,
    received_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_received ON webhook_deliveries (received_at);

-- Sends per time window, shared by every worker process (QUEUE_RATE_LIMIT).
CREATE TABLE IF NOT EXISTS send_windows (
    window_start double precision PRIMARY KEY,
    sends        integer NOT NULL CONSTRAINT send_windows_sends_positive CHECK (sends > 0)
);

CREATE TABLE IF NOT EXISTS worker_heartbeats (
    worker_id   text PRIMARY KEY,
    hostname    text NOT NULL,
    pid         integer NOT NULL,
    concurrency integer NOT NULL,
    started_at  double precision NOT NULL,
    seen_at     double precision NOT NULL
);

-- Monotonic counters for /metrics (webhooks by outcome, ...), shared across processes.
CREATE TABLE IF NOT EXISTS metric_counters (
    name  text NOT NULL,
    label text NOT NULL,
    value bigint NOT NULL,
    PRIMARY KEY (name, label)
);

-- The live rollout (one row); initial values come from the environment.
CREATE TABLE IF NOT EXISTS rollout_state (
    id           integer PRIMARY KEY CONSTRAINT rollout_state_single_row CHECK (id = 1),
    percentage   integer NOT NULL
        CONSTRAINT rollout_state_percentage CHECK (percentage BETWEEN 0 AND 100),
    shadow       boolean NOT NULL,
    n8n_enabled  boolean NOT NULL,
    queue_paused boolean NOT NULL DEFAULT false,
    guard        jsonb NOT NULL,                        -- GuardThresholds
    updated_at   double precision NOT NULL,
    updated_by   text NOT NULL
);

-- Every rollout change: who, when, from, to, why, and whether the guard did it.
CREATE TABLE IF NOT EXISTS rollout_audit (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        double precision NOT NULL,
    actor     text NOT NULL,
    action    text NOT NULL,
    before    jsonb NOT NULL,                           -- RolloutState
    after     jsonb NOT NULL,
    reason    text NOT NULL,
    automatic boolean NOT NULL,
    detail    jsonb                                     -- e.g. jobs cancelled by a rollback
);
CREATE INDEX IF NOT EXISTS rollout_audit_at ON rollout_audit (at);

-- n8n's reply and the new pipeline's shadow reply to the same customer message.
CREATE TABLE IF NOT EXISTS shadow_comparisons (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id      bigint NOT NULL,
    inbound_message_id   bigint NOT NULL UNIQUE,
    customer_message     text NOT NULL,
    received_at          double precision NOT NULL,
    broker_id            text,
    shadow_reply         text,
    shadow_latency_ms    double precision,
    shadow_used_fallback boolean,
    n8n_reply            text,
    n8n_latency_ms       double precision,
    n8n_source           text,                          -- webhook_response | message_event
    similarity           double precision,
    verdict              text
        CONSTRAINT shadow_comparisons_verdict CHECK (verdict IN ('better', 'same', 'worse')),
    verdict_note         text,
    verdict_by           text,
    verdict_at           double precision
);
CREATE INDEX IF NOT EXISTS shadow_comparisons_conversation
    ON shadow_comparisons (conversation_id, id);
CREATE INDEX IF NOT EXISTS shadow_comparisons_received ON shadow_comparisons (received_at);

-- Circuit breakers (the n8n forwarder's), shared by every receiver process.
CREATE TABLE IF NOT EXISTS circuit_breakers (
    name                 text PRIMARY KEY,
    position             text NOT NULL
        CONSTRAINT circuit_breakers_position CHECK (position IN ('closed', 'open', 'half_open')),
    consecutive_failures integer NOT NULL,
    opened_at            double precision,
    probe_started_at     double precision,
    version              integer NOT NULL
);

-- == building blocks ===========================================================================

CREATE OR REPLACE FUNCTION ai_broker_is_terminal(p_state text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = public, pg_temp AS $$
    -- app.domain.jobs.TERMINAL_STATES (a test checks that the two lists agree).
    SELECT p_state IN (
        'sent', 'handed_off', 'merged', 'skipped', 'failed', 'cancelled', 'recorded', 'forwarded');
$$;

CREATE OR REPLACE FUNCTION ai_broker_new_job_id() RETURNS text
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
    -- The SQLite store's uuid4().hex, so job ids look the same whichever store made them.
    SELECT replace(gen_random_uuid()::text, '-', '');
$$;

CREATE OR REPLACE FUNCTION ai_broker_lock_conversation(p_conversation_id bigint) RETURNS void
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
    -- One conversation's ledger changes (inbound, claim, status) queue behind each other until
    -- the transaction ends, as they do behind SQLite's single writer, while other
    -- conversations go on in parallel. Without it a message recorded while a human takes the
    -- conversation over could slip past the status check.
    SELECT pg_advisory_xact_lock(hashtextextended('ai_broker:conversation:' || p_conversation_id, 0));
$$;

CREATE OR REPLACE FUNCTION ai_broker_pick_broker(p_preferred text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
    picked text;
BEGIN
    -- The preferred broker when it has room; else the least-loaded broker with room (ties in
    -- seeding order); when every broker is full, the preferred one, else the least loaded.
    SELECT id INTO picked
      FROM ai_brokers
     WHERE is_active
     ORDER BY (id = p_preferred AND current_workload < max_concurrent_chats) IS TRUE DESC,
              current_workload < max_concurrent_chats DESC,
              (id = p_preferred) IS TRUE DESC,
              current_workload::double precision / max_concurrent_chats,
              seq
     LIMIT 1;
    IF picked IS NULL THEN
        RAISE EXCEPTION 'no active brokers: run `ai-broker brokers seed`'
            USING HINT = 'The ai_brokers table has no active broker to assign.';
    END IF;
    RETURN picked;
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_release_jobs(p_job_ids text[], p_now double precision)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    brokers text[];
BEGIN
    -- Clearing capacity_held in the same statement that reads it makes each slot come back
    -- once: a concurrent release of the same job waits on the row, then finds nothing held.
    WITH released AS (
        UPDATE reply_jobs SET capacity_held = false, updated_at = p_now
         WHERE id = ANY (p_job_ids) AND capacity_held
        RETURNING broker_id
    )
    SELECT array_agg(broker_id) INTO brokers FROM released;
    IF brokers IS NULL THEN
        RETURN;
    END IF;
    -- Brokers in id order: two releases spanning several brokers never wait on each other in
    -- a cycle.
    PERFORM 1 FROM ai_brokers WHERE id = ANY (brokers) ORDER BY id FOR UPDATE;
    UPDATE ai_brokers AS b
       SET current_workload = greatest(b.current_workload - d.n, 0), updated_at = p_now
      FROM (SELECT broker_id, count(*)::integer AS n
              FROM unnest(brokers) AS broker_id GROUP BY broker_id) AS d
     WHERE b.id = d.broker_id;
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_merge_jobs(
    p_job_ids text[], p_into text, p_now double precision
) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
BEGIN
    -- Callers hold the rows' locks. A merged message is answered by p_into's reply.
    PERFORM ai_broker_release_jobs(p_job_ids, p_now);
    UPDATE reply_jobs
       SET state = 'merged', merged_into = p_into, finished_at = p_now, lease_owner = NULL,
           lease_expires_at = NULL, updated_at = p_now
     WHERE id = ANY (p_job_ids);
    -- Messages already merged into these follow them into the newer job.
    UPDATE reply_jobs SET merged_into = p_into, updated_at = p_now
     WHERE merged_into = ANY (p_job_ids);
END;
$$;

-- == brokers and capacity ======================================================================

CREATE OR REPLACE FUNCTION ai_broker_assign_broker(
    p_conversation_id bigint,
    p_preferred_broker_id text,
    p_now double precision,
    p_contact_id bigint DEFAULT NULL,
    p_lead_score integer DEFAULT NULL,
    p_lead_profile jsonb DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    conversation broker_conversations%ROWTYPE;
BEGIN
    PERFORM ai_broker_lock_conversation(p_conversation_id);
    SELECT * INTO conversation FROM broker_conversations
     WHERE conversation_id = p_conversation_id;
    IF FOUND THEN
        -- A new lead profile updates the assignment, but never moves it to another broker.
        IF p_lead_profile IS NOT NULL THEN
            UPDATE broker_conversations
               SET lead_profile = p_lead_profile, lead_score = p_lead_score,
                   contact_id = coalesce(p_contact_id, contact_id), updated_at = p_now
             WHERE conversation_id = p_conversation_id
            RETURNING * INTO conversation;
        END IF;
        RETURN to_jsonb(conversation);
    END IF;
    INSERT INTO broker_conversations (
        conversation_id, broker_id, contact_id, lead_score, lead_profile, assigned_at, updated_at)
    VALUES (
        p_conversation_id, ai_broker_pick_broker(p_preferred_broker_id), p_contact_id,
        p_lead_score, p_lead_profile, p_now, p_now)
    RETURNING * INTO conversation;
    UPDATE ai_brokers SET total_conversations = total_conversations + 1, updated_at = p_now
     WHERE id = conversation.broker_id;
    RETURN to_jsonb(conversation);
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_hold_capacity(
    p_job_id text, p_broker_id text, p_now double precision
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    job reply_jobs%ROWTYPE;
BEGIN
    -- The job's row lock makes "counted once" hold: a concurrent hold of the same job waits
    -- here and then sees capacity_held.
    SELECT * INTO job FROM reply_jobs WHERE id = p_job_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE SQLSTATE 'PT404' USING MESSAGE = format('no reply job %s', p_job_id);
    END IF;
    IF job.capacity_held THEN
        RETURN true;
    END IF;
    IF ai_broker_is_terminal(job.state) THEN
        -- Skipped or merged meanwhile: nothing would ever release the slot.
        RETURN false;
    END IF;
    -- One conditional increment: concurrent holds wait on the broker row and re-check the
    -- condition against the committed workload, so it never passes max_concurrent_chats.
    UPDATE ai_brokers SET current_workload = current_workload + 1, updated_at = p_now
     WHERE id = p_broker_id AND current_workload < max_concurrent_chats;
    IF NOT FOUND THEN
        -- The job is alive, waiting for room: keep the reaper from thinking it lost.
        UPDATE reply_jobs SET updated_at = p_now WHERE id = p_job_id;
        RETURN false;
    END IF;
    UPDATE reply_jobs SET capacity_held = true, broker_id = p_broker_id, updated_at = p_now
     WHERE id = p_job_id;
    RETURN true;
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_release_capacity(p_job_id text, p_now double precision)
RETURNS void
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
    SELECT ai_broker_release_jobs(ARRAY[p_job_id], p_now);
$$;

CREATE OR REPLACE FUNCTION ai_broker_set_conversation_status(
    p_conversation_id bigint, p_status text, p_reason text, p_now double precision
) RETURNS text[]
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    skipped text[];
BEGIN
    PERFORM ai_broker_lock_conversation(p_conversation_id);
    IF NOT EXISTS (SELECT 1 FROM broker_conversations WHERE conversation_id = p_conversation_id)
    THEN
        -- A human got there before any broker was assigned: remember it all the same, or the
        -- customer's next message would be answered.
        INSERT INTO broker_conversations (
            conversation_id, broker_id, status, assigned_at, updated_at)
        VALUES (p_conversation_id, ai_broker_pick_broker(NULL), 'bot', p_now, p_now);
    END IF;
    IF p_status = 'handed_off' THEN
        UPDATE broker_conversations
           SET status = p_status, handoff_reason = p_reason, handoff_at = p_now,
               updated_at = p_now
         WHERE conversation_id = p_conversation_id;
    ELSE
        -- A human taking over after our own handoff keeps the handoff record.
        UPDATE broker_conversations
           SET status = CASE WHEN status = 'bot' THEN p_status ELSE status END,
               updated_at = p_now
         WHERE conversation_id = p_conversation_id;
    END IF;
    SELECT array_agg(id ORDER BY seq) INTO skipped
      FROM (SELECT id, seq FROM reply_jobs
             WHERE conversation_id = p_conversation_id AND state IN ('queued', 'waiting')
             ORDER BY seq FOR UPDATE) AS unsent;
    IF skipped IS NULL THEN
        RETURN '{}'::text[];
    END IF;
    PERFORM ai_broker_release_jobs(skipped, p_now);
    UPDATE reply_jobs
       SET state = 'skipped', error = format('conversation %s: %s', p_status, p_reason),
           finished_at = p_now, updated_at = p_now
     WHERE id = ANY (skipped);
    RETURN skipped;
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_record_delivered_reply(
    p_conversation_id bigint,
    p_broker_id text,
    p_customer_messages integer,
    p_handoff_reason text,
    p_now double precision
) RETURNS void
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
    UPDATE broker_conversations
       SET message_count = message_count + p_customer_messages, last_reply_at = p_now,
           updated_at = p_now
     WHERE conversation_id = p_conversation_id;
    UPDATE ai_brokers
       SET messages_handled = messages_handled + p_customer_messages,
           handoffs = handoffs + CASE WHEN coalesce(p_handoff_reason, '') <> '' THEN 1 ELSE 0 END,
           updated_at = p_now
     WHERE id = p_broker_id;
$$;

-- == the reply-job ledger ======================================================================

CREATE OR REPLACE FUNCTION ai_broker_record_inbound(
    p_message_id bigint,
    p_conversation_id bigint,
    p_content text,
    p_delivery_id text,
    p_now double precision,
    p_route text DEFAULT 'new',
    p_route_reason text DEFAULT NULL,
    p_payload text DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    conversation_status text;
    job reply_jobs%ROWTYPE;
BEGIN
    PERFORM ai_broker_lock_conversation(p_conversation_id);
    IF p_delivery_id IS NOT NULL THEN
        -- The unique key decides between concurrent deliveries: the loser waits for the
        -- winner's commit and then inserts nothing.
        INSERT INTO webhook_deliveries (delivery_id, received_at) VALUES (p_delivery_id, p_now)
        ON CONFLICT (delivery_id) DO NOTHING;
        IF NOT FOUND THEN
            RETURN jsonb_build_object('status', 'duplicate', 'reason', 'delivery_already_received');
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM reply_jobs WHERE inbound_message_id = p_message_id) THEN
        RETURN jsonb_build_object('status', 'duplicate', 'reason', 'message_already_received');
    END IF;
    SELECT status INTO conversation_status FROM broker_conversations
     WHERE conversation_id = p_conversation_id;
    IF conversation_status IS NOT NULL AND conversation_status <> 'bot' THEN
        RETURN jsonb_build_object('status', 'ignored', 'reason', 'conversation_' || conversation_status);
    END IF;
    UPDATE broker_conversations SET last_customer_message_at = p_now, updated_at = p_now
     WHERE conversation_id = p_conversation_id;
    INSERT INTO reply_jobs (
        id, kind, conversation_id, state, inbound_message_id, inbound_content, delivery_id,
        received_at, updated_at, route, route_reason, inbound_payload)
    VALUES (
        ai_broker_new_job_id(), 'reply', p_conversation_id,
        CASE WHEN p_route = 'n8n' THEN 'forwarding' ELSE 'queued' END, p_message_id,
        p_content, p_delivery_id, p_now, p_now, p_route, p_route_reason, p_payload)
    -- The same message id under another conversation id (never from Chatwoot) lands here.
    ON CONFLICT (inbound_message_id) DO NOTHING
    RETURNING * INTO job;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('status', 'duplicate', 'reason', 'message_already_received');
    END IF;
    RETURN jsonb_build_object('status', 'recorded', 'reason', 'customer_message', 'job', to_jsonb(job));
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_create_greeting_job(
    p_conversation_id bigint, p_broker_id text, p_now double precision
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    job reply_jobs%ROWTYPE;
BEGIN
    INSERT INTO reply_jobs (
        id, kind, conversation_id, state, broker_id, received_at, updated_at)
    VALUES (
        ai_broker_new_job_id(), 'greeting', p_conversation_id, 'queued', p_broker_id, p_now, p_now)
    RETURNING * INTO job;
    UPDATE broker_conversations SET greeting_job_id = job.id, updated_at = p_now
     WHERE conversation_id = p_conversation_id;
    RETURN to_jsonb(job);
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_prepare_job(
    p_job_id text,
    p_broker_id text,
    p_delay_s double precision,
    p_escalation_reason text,
    p_now double precision
) RETURNS jsonb
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
    UPDATE reply_jobs
       SET state = 'waiting', broker_id = p_broker_id, delay_s = p_delay_s,
           due_at = p_now + p_delay_s, escalation_reason = p_escalation_reason, updated_at = p_now
     WHERE id = p_job_id AND state = 'queued'
    RETURNING to_jsonb(reply_jobs.*);
$$;

CREATE OR REPLACE FUNCTION ai_broker_claim_job(
    p_job_id text,
    p_owner text,
    p_lease_s double precision,
    p_coalesce_window_s double precision,
    p_now double precision
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    target reply_jobs%ROWTYPE;
    job reply_jobs%ROWTYPE;
    claimable boolean;
    newer text;
    older text[];
    batch jsonb;
BEGIN
    -- conversation_id and seq never change, so an unlocked read is enough to find the locks.
    SELECT * INTO target FROM reply_jobs WHERE id = p_job_id;
    IF NOT FOUND THEN
        RETURN jsonb_build_object(
            'status', 'not_claimable', 'reason', 'unknown_job', 'job', NULL, 'batch', '[]'::jsonb);
    END IF;
    PERFORM ai_broker_lock_conversation(target.conversation_id);
    -- This job and the older messages it may absorb, locked in seq order.
    PERFORM 1 FROM reply_jobs
      WHERE conversation_id = target.conversation_id
        AND (id = p_job_id
             OR (kind = 'reply' AND seq < target.seq AND state IN ('queued', 'waiting')))
      ORDER BY seq FOR UPDATE;
    SELECT * INTO job FROM reply_jobs WHERE id = p_job_id;

    claimable := job.state = 'waiting'
        OR (job.state = 'running' AND coalesce(job.lease_expires_at <= p_now, false));
    IF NOT claimable THEN
        RETURN jsonb_build_object('status', 'not_claimable', 'reason', 'state_' || job.state,
                                  'job', to_jsonb(job), 'batch', '[]'::jsonb);
    END IF;
    IF job.state = 'waiting' AND job.due_at > p_now THEN
        RETURN jsonb_build_object('status', 'not_claimable', 'reason', 'not_due',
                                  'job', to_jsonb(job), 'batch', '[]'::jsonb);
    END IF;

    -- Burst rule: a message that already started sending is answered as it is.
    IF job.kind = 'reply' AND job.send_started_at IS NULL THEN
        SELECT id INTO newer FROM reply_jobs
         WHERE conversation_id = job.conversation_id AND kind = 'reply' AND seq > job.seq
           AND state IN ('queued', 'waiting')
         ORDER BY seq DESC LIMIT 1;
        IF newer IS NOT NULL AND p_now - job.received_at < p_coalesce_window_s THEN
            PERFORM ai_broker_merge_jobs(ARRAY[job.id], newer, p_now);
            SELECT * INTO job FROM reply_jobs WHERE id = p_job_id;
            RETURN jsonb_build_object('status', 'deferred', 'reason', 'newer_message',
                                      'job', to_jsonb(job), 'batch', '[]'::jsonb);
        END IF;
        SELECT array_agg(id ORDER BY seq) INTO older FROM reply_jobs
         WHERE conversation_id = job.conversation_id AND kind = 'reply' AND seq < job.seq
           AND state IN ('queued', 'waiting');
        IF older IS NOT NULL THEN
            PERFORM ai_broker_merge_jobs(older, job.id, p_now);
        END IF;
    END IF;

    UPDATE reply_jobs
       SET state = 'running', lease_owner = p_owner, lease_expires_at = p_now + p_lease_s,
           attempts = attempts + 1, started_at = coalesce(started_at, p_now), updated_at = p_now
     WHERE id = p_job_id
    RETURNING * INTO job;
    SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.seq), '[]'::jsonb) INTO batch
      FROM reply_jobs AS m WHERE m.merged_into = p_job_id;
    RETURN jsonb_build_object('status', 'claimed', 'reason', '', 'job', to_jsonb(job),
                              'batch', batch || jsonb_build_array(to_jsonb(job)));
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_renew_lease(
    p_job_id text, p_owner text, p_lease_s double precision, p_now double precision
) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
    WITH renewed AS (
        UPDATE reply_jobs SET lease_expires_at = p_now + p_lease_s, updated_at = p_now
         WHERE id = p_job_id AND state = 'running' AND lease_owner = p_owner
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM renewed);
$$;

CREATE OR REPLACE FUNCTION ai_broker_begin_send(
    p_job_id text, p_owner text, p_now double precision
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    before reply_jobs%ROWTYPE;
BEGIN
    -- The row lock orders this against a rollback cancelling the job: one of the two wins.
    SELECT * INTO before FROM reply_jobs
     WHERE id = p_job_id AND state = 'running' AND lease_owner = p_owner
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE reply_jobs SET send_started_at = coalesce(send_started_at, p_now), updated_at = p_now
     WHERE id = p_job_id;
    -- The job as it was, so a re-run can see an earlier send attempt.
    RETURN to_jsonb(before);
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_finish_job(
    p_job_id text,
    p_owner text,
    p_state text,
    p_now double precision,
    p_reply_text text DEFAULT NULL,
    p_reply_message_id bigint DEFAULT NULL,
    p_used_fallback boolean DEFAULT false,
    p_fallback_reason text DEFAULT NULL,
    p_error text DEFAULT NULL,
    p_error_detail text DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
BEGIN
    IF NOT ai_broker_is_terminal(p_state) THEN
        RAISE EXCEPTION '% is not a terminal state', p_state USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Without an owner (an operator cancelling) only unsent jobs can be finished; with one,
    -- only the lease holder may finish its job.
    UPDATE reply_jobs
       SET state = p_state, reply_text = coalesce(p_reply_text, reply_text),
           reply_message_id = coalesce(p_reply_message_id, reply_message_id),
           used_fallback = p_used_fallback, fallback_reason = p_fallback_reason,
           error = p_error, error_detail = p_error_detail, finished_at = p_now,
           lease_owner = NULL, lease_expires_at = NULL, updated_at = p_now
     WHERE id = p_job_id
       AND CASE WHEN coalesce(p_owner, '') <> ''
                THEN state = 'running' AND lease_owner = p_owner
                ELSE state IN ('queued', 'waiting') END;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM ai_broker_release_jobs(ARRAY[p_job_id], p_now);
    RETURN true;
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_retry_job(
    p_job_id text,
    p_owner text,
    p_due_at double precision,
    p_error text,
    p_error_detail text,
    p_now double precision,
    p_min_attempts integer DEFAULT 0
) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
    -- p_min_attempts raises the attempt count: a job giving up stays giving up.
    WITH retried AS (
        UPDATE reply_jobs
           SET state = 'waiting', due_at = p_due_at, error = p_error, error_detail = p_error_detail,
               lease_owner = NULL, lease_expires_at = NULL,
               attempts = greatest(attempts, p_min_attempts), updated_at = p_now
         WHERE id = p_job_id AND state = 'running' AND lease_owner = p_owner
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM retried);
$$;

CREATE OR REPLACE FUNCTION ai_broker_hand_back(p_owner_prefix text, p_now double precision)
RETURNS text[]
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
    -- A worker shutting down returns its running jobs: waiting, due now, no lease. Its
    -- capacity stays held; the next worker to claim a job goes on with it.
    WITH mine AS (
        SELECT id, seq FROM reply_jobs
         WHERE state = 'running' AND left(lease_owner, length(p_owner_prefix)) = p_owner_prefix
         ORDER BY seq
           FOR UPDATE
    ), handed AS (
        UPDATE reply_jobs AS r
           SET state = 'waiting', due_at = p_now, lease_owner = NULL, lease_expires_at = NULL,
               updated_at = p_now
          FROM mine
         WHERE r.id = mine.id
        RETURNING mine.seq, r.id
    )
    SELECT coalesce(array_agg(id ORDER BY seq), '{}') FROM handed;
$$;

CREATE OR REPLACE FUNCTION ai_broker_reap(
    p_now double precision, p_stale_after_s double precision, p_limit integer DEFAULT 500
) RETURNS jsonb
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
    -- SKIP LOCKED and the touch (updated_at = now) hand each lost job to one reaper only:
    -- a concurrent reaper skips the rows this one holds, and after the commit they are fresh.
    WITH lost AS (
        SELECT id, seq, state FROM reply_jobs
         WHERE (state = 'running' AND lease_expires_at <= p_now)
            OR (state IN ('queued', 'forwarding') AND updated_at <= p_now - p_stale_after_s)
            OR (state = 'waiting' AND due_at <= p_now - p_stale_after_s
                AND updated_at <= p_now - p_stale_after_s)
         ORDER BY seq
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    ), touched AS (
        -- A running job's worker is gone: hand the job to the next one, due now. A message
        -- stuck in forwarding lost its receiver before n8n answered: the new pipeline takes
        -- it (and stays silent if n8n did answer after all).
        UPDATE reply_jobs AS r
           SET state = CASE lost.state WHEN 'running' THEN 'waiting'
                                       WHEN 'forwarding' THEN 'queued'
                                       ELSE r.state END,
               due_at = CASE WHEN lost.state = 'running' THEN p_now ELSE r.due_at END,
               lease_owner = CASE WHEN lost.state = 'running' THEN NULL ELSE r.lease_owner END,
               lease_expires_at =
                   CASE WHEN lost.state = 'running' THEN NULL ELSE r.lease_expires_at END,
               route = CASE WHEN lost.state = 'forwarding' THEN 'new' ELSE r.route END,
               route_reason = CASE WHEN lost.state = 'forwarding' THEN 'forward_unconfirmed'
                                   ELSE r.route_reason END,
               updated_at = p_now
          FROM lost
         WHERE r.id = lost.id
        RETURNING lost.seq, r.id, lost.state AS was, r.due_at
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'job_id', id,
               'action', CASE WHEN was IN ('queued', 'forwarding') THEN 'prepare' ELSE 'respond' END,
               'due_at', CASE WHEN was = 'forwarding' THEN NULL ELSE due_at END) ORDER BY seq),
           '[]'::jsonb)
      FROM touched;
$$;

-- == rollout ===================================================================================

CREATE OR REPLACE FUNCTION ai_broker_get_rollout(p_initial jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
BEGIN
    -- The first reader stores the environment's initial state; everyone then reads the row.
    INSERT INTO rollout_state (
        id, percentage, shadow, n8n_enabled, queue_paused, guard, updated_at, updated_by)
    VALUES (
        1, (p_initial->>'percentage')::integer, (p_initial->>'shadow')::boolean,
        (p_initial->>'n8n_enabled')::boolean, (p_initial->>'queue_paused')::boolean,
        p_initial->'guard', (p_initial->>'updated_at')::double precision,
        p_initial->>'updated_by')
    ON CONFLICT (id) DO NOTHING;
    RETURN (SELECT to_jsonb(r) FROM rollout_state AS r WHERE id = 1);
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_save_rollout(
    p_state jsonb,
    p_expected jsonb,
    p_action text,
    p_reason text,
    p_automatic boolean,
    p_detail jsonb DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
BEGIN
    -- Compare-and-set on updated_at: a concurrent change makes this one fail (re-read, retry).
    UPDATE rollout_state
       SET percentage = (p_state->>'percentage')::integer,
           shadow = (p_state->>'shadow')::boolean,
           n8n_enabled = (p_state->>'n8n_enabled')::boolean,
           queue_paused = (p_state->>'queue_paused')::boolean,
           guard = p_state->'guard',
           updated_at = (p_state->>'updated_at')::double precision,
           updated_by = p_state->>'updated_by'
     WHERE id = 1 AND updated_at = (p_expected->>'updated_at')::double precision;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO rollout_audit (at, actor, action, before, after, reason, automatic, detail)
    VALUES ((p_state->>'updated_at')::double precision, p_state->>'updated_by', p_action,
            p_expected, p_state, p_reason, p_automatic, p_detail);
    RETURN true;
END;
$$;

-- == n8n hand-over =============================================================================

CREATE OR REPLACE FUNCTION ai_broker_forward_outcome(
    p_job_id text, p_accepted boolean, p_reason text, p_now double precision
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    job reply_jobs%ROWTYPE;
BEGIN
    IF p_accepted THEN
        UPDATE reply_jobs
           SET state = 'forwarded', route = 'n8n', route_reason = p_reason,
               finished_at = p_now, updated_at = p_now
         WHERE id = p_job_id AND state IN ('forwarding', 'cancelled')
        RETURNING * INTO job;
    ELSE
        -- n8n could not take it: the new pipeline answers instead, so nothing is lost.
        UPDATE reply_jobs
           SET state = 'queued', route = 'new', route_reason = p_reason, finished_at = NULL,
               error = NULL, updated_at = p_now
         WHERE id = p_job_id AND state IN ('forwarding', 'cancelled')
        RETURNING * INTO job;
    END IF;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN to_jsonb(job);
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_cancel_unsent_replies(p_reason text, p_now double precision)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    cancelled text[];
BEGIN
    -- A running job that has not stamped send_started_at cannot send any more: begin_send
    -- takes the same row lock and re-checks the state, so one of the two wins.
    SELECT array_agg(id ORDER BY seq) INTO cancelled
      FROM (SELECT id, seq FROM reply_jobs
             WHERE kind = 'reply' AND route = 'new'
               AND (state IN ('queued', 'waiting')
                    OR (state = 'running' AND send_started_at IS NULL))
             ORDER BY seq FOR UPDATE) AS unsent;
    IF cancelled IS NULL THEN
        RETURN '[]'::jsonb;
    END IF;
    PERFORM ai_broker_release_jobs(cancelled, p_now);
    UPDATE reply_jobs
       SET state = 'cancelled', error = p_reason, lease_owner = NULL, lease_expires_at = NULL,
           finished_at = p_now, updated_at = p_now
     WHERE id = ANY (cancelled);
    RETURN (SELECT jsonb_agg(to_jsonb(j) ORDER BY j.seq) FROM reply_jobs AS j
             WHERE j.id = ANY (cancelled));
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_cancel_job(
    p_job_id text, p_reason text, p_now double precision
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    job reply_jobs%ROWTYPE;
BEGIN
    SELECT * INTO job FROM reply_jobs WHERE id = p_job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF NOT (job.state IN ('queued', 'waiting')
            OR (job.state = 'running' AND job.send_started_at IS NULL)) THEN
        RETURN false;
    END IF;
    PERFORM ai_broker_release_jobs(ARRAY[p_job_id], p_now);
    UPDATE reply_jobs
       SET state = 'cancelled', error = p_reason, lease_owner = NULL, lease_expires_at = NULL,
           finished_at = p_now, updated_at = p_now
     WHERE id = p_job_id;
    RETURN true;
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_requeue_job(p_job_id text, p_now double precision)
RETURNS jsonb
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
    UPDATE reply_jobs
       SET state = 'queued', attempts = 0, error = NULL, error_detail = NULL, finished_at = NULL,
           send_started_at = NULL, updated_at = p_now
     WHERE id = p_job_id AND state IN ('failed', 'cancelled')
    RETURNING to_jsonb(reply_jobs.*);
$$;

-- == shadow comparisons ========================================================================

CREATE OR REPLACE FUNCTION ai_broker_create_shadow(
    p_conversation_id bigint, p_message_id bigint, p_content text, p_now double precision
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    comparison bigint;
    job reply_jobs%ROWTYPE;
BEGIN
    -- Once per customer message: the comparison's unique message id decides.
    INSERT INTO shadow_comparisons (
        conversation_id, inbound_message_id, customer_message, received_at)
    VALUES (p_conversation_id, p_message_id, p_content, p_now)
    ON CONFLICT (inbound_message_id) DO NOTHING
    RETURNING id INTO comparison;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO reply_jobs (
        id, kind, conversation_id, state, inbound_content, received_at, updated_at, route,
        comparison_id)
    VALUES (
        ai_broker_new_job_id(), 'shadow', p_conversation_id, 'queued', p_content, p_now, p_now,
        'n8n', comparison)
    RETURNING * INTO job;
    RETURN to_jsonb(job);
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_record_n8n_reply(
    p_conversation_id bigint,
    p_reply text,
    p_at double precision,
    p_source text,
    p_inbound_message_id bigint DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    pending shadow_comparisons%ROWTYPE;
BEGIN
    IF p_inbound_message_id IS NOT NULL THEN
        SELECT * INTO pending FROM shadow_comparisons
         WHERE inbound_message_id = p_inbound_message_id AND n8n_reply IS NULL
           FOR UPDATE;
    ELSE
        -- The conversation's latest comparison still waiting; SKIP LOCKED sends a concurrent
        -- second reply to the one before it, as a serial run would.
        SELECT * INTO pending FROM shadow_comparisons
         WHERE conversation_id = p_conversation_id AND n8n_reply IS NULL AND received_at <= p_at
         ORDER BY id DESC LIMIT 1
           FOR UPDATE SKIP LOCKED;
    END IF;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- The similarity is scored by the caller (Python) once both replies are in.
    UPDATE shadow_comparisons
       SET n8n_reply = p_reply,
           n8n_latency_ms = greatest(0::double precision, (p_at - received_at) * 1000),
           n8n_source = p_source
     WHERE id = pending.id
    RETURNING * INTO pending;
    RETURN to_jsonb(pending);
END;
$$;

-- == circuit breakers ==========================================================================

CREATE OR REPLACE FUNCTION ai_broker_swap_circuit(
    p_name text,
    p_expected_version integer,
    p_position text,
    p_consecutive_failures integer,
    p_opened_at double precision,
    p_probe_started_at double precision
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
BEGIN
    -- Compare-and-set on the version; version 0 is "no row yet".
    IF p_expected_version = 0 THEN
        INSERT INTO circuit_breakers (
            name, position, consecutive_failures, opened_at, probe_started_at, version)
        VALUES (p_name, p_position, p_consecutive_failures, p_opened_at, p_probe_started_at, 1)
        ON CONFLICT (name) DO NOTHING;
        RETURN FOUND;
    END IF;
    UPDATE circuit_breakers
       SET position = p_position, consecutive_failures = p_consecutive_failures,
           opened_at = p_opened_at, probe_started_at = p_probe_started_at,
           version = p_expected_version + 1
     WHERE name = p_name AND version = p_expected_version;
    RETURN FOUND;
END;
$$;

-- == the new pipeline's health =================================================================

CREATE OR REPLACE FUNCTION ai_broker_reply_window_stats(
    p_since double precision, p_now double precision, p_overdue_s double precision DEFAULT 30
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT jsonb_build_object(
        'finished', count(*),
        'failed', count(*) FILTER (WHERE state = 'failed'),
        'sent', count(*) FILTER (WHERE state = 'sent'),
        'fallbacks', count(*) FILTER (WHERE state = 'sent' AND used_fallback),
        'latencies_s', coalesce(
            jsonb_agg(finished_at - received_at ORDER BY finished_at - received_at)
                FILTER (WHERE state IN ('sent', 'handed_off')),
            '[]'::jsonb),
        'backlog', (SELECT count(*) FROM reply_jobs
                     WHERE state IN ('queued', 'waiting')
                       AND coalesce(due_at, received_at) < p_now - p_overdue_s))
      FROM reply_jobs
     WHERE kind = 'reply' AND route = 'new' AND state IN ('sent', 'handed_off', 'failed')
       AND finished_at >= p_since;
$$;

-- == shared runtime state ======================================================================

CREATE OR REPLACE FUNCTION ai_broker_acquire_send_slot(
    p_window_start double precision, p_allowed integer
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
BEGIN
    -- One statement takes the slot or finds the window full; the row lock serialises workers.
    INSERT INTO send_windows AS w (window_start, sends) VALUES (p_window_start, 1)
    ON CONFLICT (window_start) DO UPDATE SET sends = w.sends + 1 WHERE w.sends < p_allowed;
    RETURN FOUND;
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_heartbeat(
    p_worker_id text,
    p_hostname text,
    p_pid integer,
    p_concurrency integer,
    p_started_at double precision,
    p_seen_at double precision
) RETURNS void
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
    INSERT INTO worker_heartbeats (worker_id, hostname, pid, concurrency, started_at, seen_at)
    VALUES (p_worker_id, p_hostname, p_pid, p_concurrency, p_started_at, p_seen_at)
    ON CONFLICT (worker_id) DO UPDATE SET seen_at = excluded.seen_at;
$$;

CREATE OR REPLACE FUNCTION ai_broker_count(p_name text, p_label text, p_amount bigint DEFAULT 1)
RETURNS void
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
    INSERT INTO metric_counters AS c (name, label, value) VALUES (p_name, p_label, p_amount)
    ON CONFLICT (name, label) DO UPDATE SET value = c.value + excluded.value;
$$;

CREATE OR REPLACE FUNCTION ai_broker_job_state_counts() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- An aggregate: PostgREST's own aggregates are off by default on Supabase.
    SELECT coalesce(jsonb_object_agg(state, n), '{}'::jsonb)
      FROM (SELECT state, count(*) AS n FROM reply_jobs GROUP BY state) AS counts;
$$;

CREATE OR REPLACE FUNCTION ai_broker_reply_latencies(p_since double precision)
RETURNS double precision[]
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- One array value, not rows: PostgREST's max-rows cap does not cut it short.
    SELECT coalesce(array_agg(finished_at - received_at ORDER BY seq), '{}')
      FROM reply_jobs
     WHERE reply_message_id IS NOT NULL AND finished_at >= p_since;
$$;

-- == access ====================================================================================

ALTER TABLE schema_migrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE schema_meta ENABLE ROW LEVEL SECURITY;
ALTER TABLE ai_brokers ENABLE ROW LEVEL SECURITY;
ALTER TABLE broker_conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE reply_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE send_windows ENABLE ROW LEVEL SECURITY;
ALTER TABLE worker_heartbeats ENABLE ROW LEVEL SECURITY;
ALTER TABLE metric_counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollout_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE rollout_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE shadow_comparisons ENABLE ROW LEVEL SECURITY;
ALTER TABLE circuit_breakers ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
    tables text[] := ARRAY[
        'schema_migrations', 'schema_meta', 'ai_brokers', 'broker_conversations', 'reply_jobs',
        'webhook_deliveries', 'send_windows', 'worker_heartbeats', 'metric_counters',
        'rollout_state', 'rollout_audit', 'shadow_comparisons', 'circuit_breakers'];
    client_roles text[] := ARRAY['anon', 'authenticated'];
    item text;
    role_name text;
BEGIN
    -- Functions are executable by PUBLIC by default, and Supabase grants new tables and
    -- functions to its client roles: take both back, and give them to service_role only.
    FOR item IN
        SELECT p.oid::regprocedure::text
          FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' AND p.proname LIKE 'ai\_broker\_%'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', item);
        FOREACH role_name IN ARRAY client_roles LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
                EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %I', item, role_name);
            END IF;
        END LOOP;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', item);
        END IF;
    END LOOP;
    FOREACH item IN ARRAY tables LOOP
        FOREACH role_name IN ARRAY client_roles LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
                EXECUTE format('REVOKE ALL ON TABLE %I FROM %I', item, role_name);
            END IF;
        END LOOP;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %I TO service_role', item);
        END IF;
    END LOOP;
END;
$$;

-- == version ===================================================================================

INSERT INTO schema_meta (key, value) VALUES ('schema_version', '0001')
ON CONFLICT (key) DO UPDATE SET value = excluded.value;
INSERT INTO schema_migrations (version) VALUES ('0001') ON CONFLICT (version) DO NOTHING;

-- PostgREST serves from a schema cache: have it pick up the new tables and functions now (on a
-- plain PostgreSQL nobody listens, and this does nothing).
NOTIFY pgrst, 'reload schema';
