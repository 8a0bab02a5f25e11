-- ai-broker 0002: every store call is one function, for both transports.
--
-- Migration 0001 left some reads and single-row writes to PostgREST's table API. Over REST
-- those are capped by max-rows (1,000 on Supabase), and over psycopg there is no table API at
-- all: so every one of them becomes a function here, and both transports (supabase-py's /rpc
-- and psycopg's SELECT) call the same functions. Only additions: builds that still use 0001's
-- calls keep working beside this schema during a rolling deploy.
--
-- Also: the guard's and /metrics' latency figures computed in SQL (percentiles, histogram)
-- instead of shipping every latency of the window; housekeeping deletes in bounded batches;
-- and `ai_broker_restrict_access()`, which every migration runs last so that only
-- service_role can reach what it created.

-- == access ====================================================================================

CREATE OR REPLACE FUNCTION ai_broker_restrict_access() RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    -- Every ai-broker table, whichever migrations have created so far.
    tables text[] := ARRAY[
        'schema_migrations', 'schema_meta', 'ai_brokers', 'broker_conversations', 'reply_jobs',
        'webhook_deliveries', 'send_windows', 'worker_heartbeats', 'metric_counters',
        'rollout_state', 'rollout_audit', 'shadow_comparisons', 'circuit_breakers',
        'broker_samples', 'operator_actions'];
    client_roles text[] := ARRAY['anon', 'authenticated'];
    item text;
    role_name text;
BEGIN
    -- Functions are executable by PUBLIC by default, and Supabase grants new tables, sequences
    -- and functions to its client roles: take all of it back, and give it to service_role.
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
        CONTINUE WHEN to_regclass(format('public.%I', item)) IS NULL;
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', item);
        FOREACH role_name IN ARRAY client_roles LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
                EXECUTE format('REVOKE ALL ON TABLE %I FROM %I', item, role_name);
            END IF;
        END LOOP;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %I TO service_role', item);
        END IF;
    END LOOP;
    -- Identity columns' sequences.
    FOR item IN
        SELECT s.oid::regclass::text
          FROM pg_class AS s
          JOIN pg_depend AS d ON d.objid = s.oid AND d.deptype IN ('a', 'i')
          JOIN pg_class AS t ON t.oid = d.refobjid
         WHERE s.relkind = 'S' AND t.relname = ANY (tables)
    LOOP
        FOREACH role_name IN ARRAY client_roles LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
                EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %I', item, role_name);
            END IF;
        END LOOP;
    END LOOP;
END;
$$;

-- == lifecycle =================================================================================

CREATE OR REPLACE FUNCTION ai_broker_schema_version() RETURNS text
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT value FROM schema_meta WHERE key = 'schema_version';
$$;

-- == brokers ===================================================================================

CREATE OR REPLACE FUNCTION ai_broker_seed_brokers(
    p_brokers jsonb, p_max_concurrent_chats integer, p_now double precision
) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    inserted integer;
BEGIN
    -- In the given order, so `seq` (the listing order) follows the personas' order.
    INSERT INTO ai_brokers (
        id, name, persona_type, title, specialty, max_concurrent_chats, created_at, updated_at)
    SELECT b.id, b.name, b.persona_type, b.title, b.specialty, p_max_concurrent_chats,
           p_now, p_now
      FROM ROWS FROM (jsonb_to_recordset(p_brokers)
               AS (id text, name text, persona_type text, title text, specialty text))
           WITH ORDINALITY AS b(id, name, persona_type, title, specialty, i)
     ORDER BY b.i
    ON CONFLICT (id) DO NOTHING;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    RETURN inserted;
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_list_brokers() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(b) ORDER BY b.seq), '[]'::jsonb) FROM ai_brokers AS b;
$$;

CREATE OR REPLACE FUNCTION ai_broker_get_conversation(p_conversation_id bigint) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT to_jsonb(c) FROM broker_conversations AS c WHERE c.conversation_id = p_conversation_id;
$$;

-- == the ledger ================================================================================

CREATE OR REPLACE FUNCTION ai_broker_get_job(p_job_id text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT to_jsonb(j) FROM reply_jobs AS j WHERE j.id = p_job_id;
$$;

CREATE OR REPLACE FUNCTION ai_broker_list_jobs(
    p_states text[] DEFAULT NULL,
    p_conversation_id bigint DEFAULT NULL,
    p_limit integer DEFAULT 100
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- One jsonb value: PostgREST's max-rows does not cut it (resume reads every held job).
    SELECT coalesce(jsonb_agg(to_jsonb(j) ORDER BY j.seq DESC), '[]'::jsonb)
      FROM (SELECT * FROM reply_jobs
             WHERE (p_states IS NULL OR state = ANY (p_states))
               AND (p_conversation_id IS NULL OR conversation_id = p_conversation_id)
             ORDER BY seq DESC
             LIMIT p_limit) AS j;
$$;

-- == rollout ===================================================================================

CREATE OR REPLACE FUNCTION ai_broker_rollout(p_initial jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
    state jsonb;
BEGIN
    -- A read, except the very first time, when get_rollout stores the initial state.
    SELECT to_jsonb(r) INTO state FROM rollout_state AS r WHERE id = 1;
    RETURN state;
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_audit_log(p_limit integer DEFAULT 100) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.id DESC), '[]'::jsonb)
      FROM (SELECT * FROM rollout_audit ORDER BY id DESC LIMIT p_limit) AS a;
$$;

-- == shadow comparisons ========================================================================

CREATE OR REPLACE FUNCTION ai_broker_record_shadow_reply(
    p_comparison_id bigint,
    p_reply text,
    p_latency_ms double precision,
    p_used_fallback boolean,
    p_broker_id text
) RETURNS jsonb
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
    -- The row comes back so the caller can score it once n8n's reply is in too.
    UPDATE shadow_comparisons
       SET shadow_reply = p_reply, shadow_latency_ms = p_latency_ms,
           shadow_used_fallback = p_used_fallback, broker_id = p_broker_id
     WHERE id = p_comparison_id
    RETURNING to_jsonb(shadow_comparisons.*);
$$;

CREATE OR REPLACE FUNCTION ai_broker_score_comparison(
    p_comparison_id bigint, p_similarity double precision
) RETURNS void
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
    -- The score is Python's (app.domain.similarity); writing it again is harmless.
    UPDATE shadow_comparisons SET similarity = p_similarity
     WHERE id = p_comparison_id AND shadow_reply IS NOT NULL AND n8n_reply IS NOT NULL;
$$;

CREATE OR REPLACE FUNCTION ai_broker_set_verdict(
    p_comparison_id bigint, p_verdict text, p_note text, p_actor text, p_now double precision
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE shadow_comparisons
       SET verdict = p_verdict, verdict_note = p_note, verdict_by = p_actor, verdict_at = p_now
     WHERE id = p_comparison_id;
    RETURN FOUND;
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_get_comparison(p_comparison_id bigint) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT to_jsonb(c) FROM shadow_comparisons AS c WHERE c.id = p_comparison_id;
$$;

CREATE OR REPLACE FUNCTION ai_broker_list_comparisons(
    p_since double precision DEFAULT NULL,
    p_until double precision DEFAULT NULL,
    p_broker_id text DEFAULT NULL,
    p_max_similarity double precision DEFAULT NULL,
    p_unrated boolean DEFAULT false,
    p_conversation_id bigint DEFAULT NULL,
    p_limit integer DEFAULT 200
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.id DESC), '[]'::jsonb)
      FROM (SELECT * FROM shadow_comparisons
             WHERE (p_since IS NULL OR received_at >= p_since)
               AND (p_until IS NULL OR received_at < p_until)
               AND (p_broker_id IS NULL OR broker_id = p_broker_id)
               AND (p_max_similarity IS NULL OR similarity <= p_max_similarity)
               AND (p_conversation_id IS NULL OR conversation_id = p_conversation_id)
               AND (NOT p_unrated OR verdict IS NULL)
             ORDER BY id DESC
             LIMIT p_limit) AS c;
$$;

-- == circuit breakers and workers ==============================================================

CREATE OR REPLACE FUNCTION ai_broker_get_circuit(p_name text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT to_jsonb(c) FROM circuit_breakers AS c WHERE c.name = p_name;
$$;

CREATE OR REPLACE FUNCTION ai_broker_live_workers(p_since double precision) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(w) ORDER BY w.started_at, w.worker_id), '[]'::jsonb)
      FROM worker_heartbeats AS w WHERE w.seen_at >= p_since;
$$;

CREATE OR REPLACE FUNCTION ai_broker_counters(p_name text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_object_agg(label, value), '{}'::jsonb)
      FROM metric_counters WHERE name = p_name;
$$;

-- == the new pipeline's health, summarised in SQL ==============================================

CREATE OR REPLACE FUNCTION ai_broker_reply_window_summary(
    p_since double precision, p_now double precision, p_overdue_s double precision DEFAULT 30
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- Nearest-rank percentiles (percentile_disc), as app.guard.percentile computes them.
    SELECT jsonb_build_object(
        'finished', count(*),
        'failed', count(*) FILTER (WHERE state = 'failed'),
        'sent', count(*) FILTER (WHERE state = 'sent'),
        'fallbacks', count(*) FILTER (WHERE state = 'sent' AND used_fallback),
        'p50_s', percentile_disc(0.5) WITHIN GROUP (ORDER BY finished_at - received_at)
                     FILTER (WHERE state IN ('sent', 'handed_off')),
        'p95_s', percentile_disc(0.95) WITHIN GROUP (ORDER BY finished_at - received_at)
                     FILTER (WHERE state IN ('sent', 'handed_off')),
        'backlog', (SELECT count(*) FROM reply_jobs
                     WHERE state IN ('queued', 'waiting')
                       AND coalesce(due_at, received_at) < p_now - p_overdue_s))
      FROM reply_jobs
     WHERE kind = 'reply' AND route = 'new' AND state IN ('sent', 'handed_off', 'failed')
       AND finished_at >= p_since;
$$;

CREATE OR REPLACE FUNCTION ai_broker_reply_latency_histogram(
    p_since double precision, p_bounds double precision[]
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- Cumulative counts per upper bound (Prometheus' buckets), the count and the sum.
    WITH latencies AS (
        SELECT finished_at - received_at AS latency FROM reply_jobs
         WHERE reply_message_id IS NOT NULL AND finished_at >= p_since
    )
    SELECT jsonb_build_object(
        'buckets', (SELECT coalesce(jsonb_agg(
                               (SELECT count(*) FROM latencies WHERE latency <= b.bound)
                               ORDER BY b.i), '[]'::jsonb)
                      FROM unnest(p_bounds) WITH ORDINALITY AS b(bound, i)),
        'count', (SELECT count(*) FROM latencies),
        'sum', (SELECT coalesce(sum(latency), 0) FROM latencies));
$$;

-- == housekeeping ==============================================================================

CREATE OR REPLACE FUNCTION ai_broker_prune_batch(
    p_now double precision,
    p_deliveries_before double precision,
    p_heartbeats_before double precision,
    p_payloads_before double precision,
    p_jobs_before double precision,
    p_comparisons_before double precision,
    p_batch integer DEFAULT 1000
) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    changed integer;
    total integer := 0;
BEGIN
    -- At most p_batch rows per table and call, so no call holds locks or bloats WAL for long;
    -- the caller repeats while rows were changed.
    DELETE FROM webhook_deliveries WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM webhook_deliveries WHERE received_at < p_deliveries_before
         LIMIT p_batch));
    GET DIAGNOSTICS changed = ROW_COUNT; total := total + changed;
    DELETE FROM send_windows WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM send_windows WHERE window_start < p_now - 60 LIMIT p_batch));
    GET DIAGNOSTICS changed = ROW_COUNT; total := total + changed;
    DELETE FROM worker_heartbeats WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM worker_heartbeats WHERE seen_at < p_heartbeats_before LIMIT p_batch));
    GET DIAGNOSTICS changed = ROW_COUNT; total := total + changed;
    -- The raw webhook (the customer's details) is only needed while the job may still be
    -- handed to n8n.
    UPDATE reply_jobs SET inbound_payload = NULL WHERE seq = ANY (ARRAY(
        SELECT seq FROM reply_jobs
         WHERE finished_at < p_payloads_before AND inbound_payload IS NOT NULL
         LIMIT p_batch));
    GET DIAGNOSTICS changed = ROW_COUNT; total := total + changed;
    DELETE FROM reply_jobs WHERE seq = ANY (ARRAY(
        SELECT seq FROM reply_jobs WHERE finished_at < p_jobs_before LIMIT p_batch));
    GET DIAGNOSTICS changed = ROW_COUNT; total := total + changed;
    DELETE FROM shadow_comparisons WHERE id = ANY (ARRAY(
        SELECT id FROM shadow_comparisons WHERE received_at < p_comparisons_before
         LIMIT p_batch));
    GET DIAGNOSTICS changed = ROW_COUNT; total := total + changed;
    RETURN total;
END;
$$;

CREATE INDEX IF NOT EXISTS worker_heartbeats_seen ON worker_heartbeats (seen_at);

-- == version ===================================================================================

SELECT ai_broker_restrict_access();

INSERT INTO schema_meta (key, value) VALUES ('schema_version', '0002')
ON CONFLICT (key) DO UPDATE SET value = excluded.value;
INSERT INTO schema_migrations (version) VALUES ('0002') ON CONFLICT (version) DO NOTHING;

NOTIFY pgrst, 'reload schema';
