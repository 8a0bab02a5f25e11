-- ai-broker 0003: the operations console on PostgreSQL.
--
-- The console's aggregate queries (app/store/analytics.py, SqliteAnalytics) ran only on the
-- embedded SQLite store. Here each of them is one function returning one jsonb value, so
-- PostgREST's max-rows (1,000 on Supabase) never cuts a result and both transports call the
-- same SQL (app/store/analytics_postgres.py). The two backends must return identical records
-- (tests/integration/test_analytics_contract.py), which takes four rules:
--
-- - Time buckets use floor(t). CAST(t AS integer) truncates in SQLite but ROUNDS here, which
--   would move an event at 299.5 s into the next bucket (and one just before the range's end
--   out of the chart).
-- - Percentiles are nearest-rank: percentile_disc, SQLite's ROW_NUMBER rule.
-- - Text is ordered and matched in the "C" collation: byte order, as SQLite's BINARY, and
--   ILIKE folding ASCII letters only, as SQLite's LIKE does (in a UTF-8 locale ILIKE would
--   also fold é and É, which SQLite does not).
-- - Averages are rounded by the caller (app/store/analytics.py, `rounded_mean`): the two
--   databases sum floats in different orders and ways, so their last bits may differ.
--
-- Also the console's two tables, which SQLite creates in schema.sql: `broker_samples` (each
-- broker's workload once a minute, written by the worker) and `operator_actions` (retries,
-- cancellations and intake replays from the console). Only additions.

-- == tables ====================================================================================

CREATE TABLE IF NOT EXISTS broker_samples (
    sampled_at double precision NOT NULL,
    broker_id  text NOT NULL,
    workload   integer NOT NULL,
    capacity   integer NOT NULL,
    PRIMARY KEY (broker_id, sampled_at)
);
CREATE INDEX IF NOT EXISTS broker_samples_at ON broker_samples (sampled_at);

CREATE TABLE IF NOT EXISTS operator_actions (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     double precision NOT NULL,
    actor  text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    reason text NOT NULL
);
CREATE INDEX IF NOT EXISTS operator_actions_target ON operator_actions (target, id);

-- == building blocks ===========================================================================

CREATE OR REPLACE FUNCTION ai_broker_like_escape(p_text text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = public, pg_temp AS $$
    -- The text as a LIKE pattern matching itself (escape character: backslash).
    SELECT replace(replace(replace(p_text, E'\\', E'\\\\'), '%', E'\\%'), '_', E'\\_');
$$;

-- == the queue and the workers =================================================================

CREATE OR REPLACE FUNCTION ai_broker_console_state_counts() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_object_agg(t.state, t.n), '{}'::jsonb)
      FROM (SELECT state, count(*) AS n FROM reply_jobs GROUP BY state) AS t;
$$;

CREATE OR REPLACE FUNCTION ai_broker_console_overdue(
    p_now double precision, p_overdue_s double precision
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT to_jsonb(count(*)) FROM reply_jobs
     WHERE state IN ('queued', 'waiting') AND coalesce(due_at, received_at) < p_now - p_overdue_s;
$$;

CREATE OR REPLACE FUNCTION ai_broker_console_unsent_replies() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- What ai_broker_cancel_unsent_replies would cancel now.
    SELECT to_jsonb(count(*)) FROM reply_jobs
     WHERE kind = 'reply' AND route = 'new'
       AND (state IN ('queued', 'waiting') OR (state = 'running' AND send_started_at IS NULL));
$$;

CREATE OR REPLACE FUNCTION ai_broker_console_workers() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(w) ORDER BY w.seen_at DESC, w.worker_id COLLATE "C"),
                    '[]'::jsonb)
      FROM worker_heartbeats AS w;
$$;

-- == throughput, latency, traffic ==============================================================

CREATE OR REPLACE FUNCTION ai_broker_console_outcomes(
    p_start bigint, p_end bigint, p_size_s integer
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- Finished jobs per bucket (by finish time) and outcome: [{b, outcome, n}].
    SELECT coalesce(jsonb_agg(jsonb_build_object('b', t.b, 'outcome', t.outcome, 'n', t.n)
                              ORDER BY t.b, t.outcome COLLATE "C"), '[]'::jsonb)
      FROM (SELECT (floor(finished_at)::bigint - p_start) / p_size_s AS b,
                   CASE WHEN state IN ('sent', 'handed_off', 'failed', 'forwarded') THEN state
                        WHEN state = 'recorded' THEN 'shadow' ELSE 'other' END AS outcome,
                   count(*) AS n
              FROM reply_jobs
             WHERE finished_at >= p_start AND finished_at < p_end
             GROUP BY 1, 2) AS t;
$$;

CREATE OR REPLACE FUNCTION ai_broker_console_latencies(
    p_start bigint, p_end bigint, p_size_s integer
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- The new pipeline's replies that reached the customer, per bucket with any: [{b, n, p50,
    -- p95}] of customer message -> reply, nearest rank.
    SELECT coalesce(jsonb_agg(jsonb_build_object('b', t.b, 'n', t.n, 'p50', t.p50, 'p95', t.p95)
                              ORDER BY t.b), '[]'::jsonb)
      FROM (SELECT (floor(finished_at)::bigint - p_start) / p_size_s AS b, count(*) AS n,
                   percentile_disc(0.5) WITHIN GROUP (ORDER BY finished_at - received_at) AS p50,
                   percentile_disc(0.95) WITHIN GROUP (ORDER BY finished_at - received_at) AS p95
              FROM reply_jobs
             WHERE finished_at >= p_start AND finished_at < p_end
               AND kind = 'reply' AND route = 'new' AND state IN ('sent', 'handed_off')
             GROUP BY 1) AS t;
$$;

CREATE OR REPLACE FUNCTION ai_broker_console_window_stats(
    p_since double precision, p_until double precision
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT jsonb_build_object(
        'sent', count(*) FILTER (WHERE state = 'sent'),
        'handed_off', count(*) FILTER (WHERE state = 'handed_off'),
        'failed', count(*) FILTER (WHERE state = 'failed'),
        'fallbacks', count(*) FILTER (WHERE state = 'sent' AND used_fallback),
        'forwarded', count(*) FILTER (WHERE state = 'forwarded'),
        'p50', percentile_disc(0.5) WITHIN GROUP (ORDER BY finished_at - received_at)
                   FILTER (WHERE route = 'new' AND state IN ('sent', 'handed_off')),
        'p95', percentile_disc(0.95) WITHIN GROUP (ORDER BY finished_at - received_at)
                   FILTER (WHERE route = 'new' AND state IN ('sent', 'handed_off')))
      FROM reply_jobs
     WHERE finished_at >= p_since AND finished_at < p_until AND kind = 'reply';
$$;

CREATE OR REPLACE FUNCTION ai_broker_console_traffic(
    p_start bigint, p_end bigint, p_size_s integer
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- Customer messages per bucket (by arrival) by route: [{b, new, n8n}].
    SELECT coalesce(jsonb_agg(jsonb_build_object('b', t.b, 'new', t.n_new, 'n8n', t.n_n8n)
                              ORDER BY t.b), '[]'::jsonb)
      FROM (SELECT (floor(received_at)::bigint - p_start) / p_size_s AS b,
                   count(*) FILTER (WHERE route = 'new') AS n_new,
                   count(*) FILTER (WHERE route = 'n8n') AS n_n8n
              FROM reply_jobs
             WHERE received_at >= p_start AND received_at < p_end AND kind = 'reply'
             GROUP BY 1) AS t;
$$;

CREATE OR REPLACE FUNCTION ai_broker_console_percentage_steps(p_since double precision)
RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- The percentage in force at p_since (null before any change), then every change after.
    SELECT jsonb_build_object(
        'before', (SELECT coalesce((a.after ->> 'percentage')::integer, 0)
                     FROM rollout_audit AS a WHERE a.at < p_since
                    ORDER BY a.at DESC, a.id DESC LIMIT 1),
        'after', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                             'at', a.at,
                             'percentage', coalesce((a.after ->> 'percentage')::integer, 0))
                         ORDER BY a.at, a.id), '[]'::jsonb)
                    FROM rollout_audit AS a WHERE a.at >= p_since));
$$;

-- == brokers ===================================================================================

CREATE OR REPLACE FUNCTION ai_broker_sample_brokers(
    p_now double precision, p_retention_s double precision
) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    written integer;
BEGIN
    -- Every active broker's workload now; samples older than the retention are dropped.
    INSERT INTO broker_samples (sampled_at, broker_id, workload, capacity)
    SELECT p_now, b.id, b.current_workload, b.max_concurrent_chats
      FROM ai_brokers AS b WHERE b.is_active
    ON CONFLICT (broker_id, sampled_at) DO NOTHING;
    GET DIAGNOSTICS written = ROW_COUNT;
    DELETE FROM broker_samples WHERE sampled_at < p_now - p_retention_s;
    RETURN written;
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_console_workload_history(
    p_since double precision, p_max_points integer DEFAULT 300
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- Samples since p_since, thinned to at most ~p_max_points per broker: the busiest sample
    -- of each slot. Slots are whole seconds from trunc(p_since), floor(last - first) div
    -- p_max_points + 1 long, integer arithmetic exactly as SqliteAnalytics computes them.
    WITH span AS (
        SELECT min(sampled_at) AS first, max(sampled_at) AS last
          FROM broker_samples WHERE sampled_at >= p_since
    ), grid AS (
        SELECT trunc(p_since)::bigint AS start,
               greatest(1, floor(s.last - s.first)::bigint / p_max_points + 1) AS slot
          FROM span AS s WHERE s.first IS NOT NULL
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'sampled_at', g.start + t.slot * g.slot, 'broker_id', t.broker_id,
               'workload', t.workload, 'capacity', t.capacity)
             ORDER BY t.broker_id COLLATE "C", t.slot), '[]'::jsonb)
      FROM grid AS g,
           LATERAL (SELECT (floor(b.sampled_at)::bigint - g.start) / g.slot AS slot, b.broker_id,
                           max(b.workload) AS workload, max(b.capacity) AS capacity
                      FROM broker_samples AS b WHERE b.sampled_at >= p_since
                     GROUP BY 1, 2) AS t;
$$;

CREATE OR REPLACE FUNCTION ai_broker_console_broker_activity(
    p_since double precision, p_until double precision
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.broker_id COLLATE "C"), '[]'::jsonb)
      FROM (SELECT broker_id,
                   count(*) FILTER (WHERE state IN ('sent', 'handed_off')) AS replies,
                   count(*) FILTER (WHERE state = 'handed_off') AS handoffs,
                   count(*) FILTER (WHERE state = 'failed') AS failures,
                   count(*) FILTER (WHERE state = 'sent' AND used_fallback) AS fallbacks
              FROM reply_jobs
             WHERE finished_at >= p_since AND finished_at < p_until
               AND broker_id IS NOT NULL AND kind IN ('reply', 'greeting')
             GROUP BY broker_id) AS t;
$$;

CREATE OR REPLACE FUNCTION ai_broker_console_broker_conversations() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.broker_id COLLATE "C"), '[]'::jsonb)
      FROM (SELECT broker_id,
                   count(*) FILTER (WHERE status = 'bot') AS bot,
                   count(*) FILTER (WHERE status = 'handed_off') AS handed_off,
                   count(*) FILTER (WHERE status = 'human') AS human
              FROM broker_conversations GROUP BY broker_id) AS t;
$$;

CREATE OR REPLACE FUNCTION ai_broker_console_broker_replies(
    p_start bigint, p_end bigint, p_size_s integer
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- Replies that reached the customer per bucket and broker: [{b, broker_id, n}].
    SELECT coalesce(jsonb_agg(jsonb_build_object('b', t.b, 'broker_id', t.broker_id, 'n', t.n)
                              ORDER BY t.b, t.broker_id COLLATE "C"), '[]'::jsonb)
      FROM (SELECT (floor(finished_at)::bigint - p_start) / p_size_s AS b, broker_id,
                   count(*) AS n
              FROM reply_jobs
             WHERE finished_at >= p_start AND finished_at < p_end
               AND state IN ('sent', 'handed_off') AND broker_id IS NOT NULL
             GROUP BY 1, 2) AS t;
$$;

-- == the ledger ================================================================================

CREATE OR REPLACE FUNCTION ai_broker_console_search_jobs(
    p_states text[] DEFAULT NULL,
    p_kinds text[] DEFAULT NULL,
    p_routes text[] DEFAULT NULL,
    p_conversation_id bigint DEFAULT NULL,
    p_broker_id text DEFAULT NULL,
    p_text text DEFAULT NULL,
    p_since double precision DEFAULT NULL,
    p_until double precision DEFAULT NULL,
    p_offset integer DEFAULT 0,
    p_limit integer DEFAULT 50,
    p_excerpt_chars integer DEFAULT 120
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- {total, rows}: one page of the matching jobs, newest first, with message and error
    -- excerpts. Empty lists and empty text filter nothing. The text matches a job id's first
    -- characters or anywhere in the message, as a literal (LIKE's % and _ escaped), ASCII
    -- letters in either case: SQLite's LIKE.
    WITH hits AS (
        SELECT j.seq FROM reply_jobs AS j
         WHERE (coalesce(cardinality(p_states), 0) = 0 OR j.state = ANY (p_states))
           AND (coalesce(cardinality(p_kinds), 0) = 0 OR j.kind = ANY (p_kinds))
           AND (coalesce(cardinality(p_routes), 0) = 0 OR j.route = ANY (p_routes))
           AND (p_conversation_id IS NULL OR j.conversation_id = p_conversation_id)
           AND (p_broker_id IS NULL OR j.broker_id = p_broker_id)
           AND (p_since IS NULL OR j.received_at >= p_since)
           AND (p_until IS NULL OR j.received_at < p_until)
           AND (coalesce(p_text, '') = ''
                OR (j.id COLLATE "C") ILIKE ai_broker_like_escape(p_text) || '%' ESCAPE E'\\'
                OR (j.inbound_content COLLATE "C")
                       ILIKE '%' || ai_broker_like_escape(p_text) || '%' ESCAPE E'\\')
    ), page AS (
        SELECT seq FROM hits ORDER BY seq DESC LIMIT p_limit OFFSET p_offset
    )
    SELECT jsonb_build_object(
        'total', (SELECT count(*) FROM hits),
        'rows', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                            'id', j.id, 'seq', j.seq, 'kind', j.kind, 'state', j.state,
                            'route', j.route, 'conversation_id', j.conversation_id,
                            'broker_id', j.broker_id, 'attempts', j.attempts,
                            'received_at', j.received_at, 'finished_at', j.finished_at,
                            'used_fallback', j.used_fallback,
                            'message', substr(j.inbound_content, 1, p_excerpt_chars),
                            'error', substr(j.error, 1, p_excerpt_chars))
                          ORDER BY j.seq DESC), '[]'::jsonb)
                   FROM page JOIN reply_jobs AS j USING (seq)));
$$;

CREATE OR REPLACE FUNCTION ai_broker_console_job_detail(p_job_id text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- The whole row and the messages merged into it (oldest first); null for an unknown id.
    SELECT to_jsonb(j) || jsonb_build_object(
               'merged', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                     'job_id', m.id, 'received_at', m.received_at,
                                     'content', m.inbound_content) ORDER BY m.seq), '[]'::jsonb)
                            FROM reply_jobs AS m WHERE m.merged_into = j.id))
      FROM reply_jobs AS j WHERE j.id = p_job_id;
$$;

-- == shadow comparisons ========================================================================

CREATE OR REPLACE FUNCTION ai_broker_console_comparisons(
    p_since double precision DEFAULT NULL,
    p_until double precision DEFAULT NULL,
    p_broker_id text DEFAULT NULL,
    p_max_similarity double precision DEFAULT NULL,
    p_unrated boolean DEFAULT false,
    p_offset integer DEFAULT 0,
    p_limit integer DEFAULT 20
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- {total, rows}: one page of the matching comparisons, newest first.
    WITH hits AS (
        SELECT c.id FROM shadow_comparisons AS c
         WHERE (p_since IS NULL OR c.received_at >= p_since)
           AND (p_until IS NULL OR c.received_at < p_until)
           AND (p_broker_id IS NULL OR c.broker_id = p_broker_id)
           AND (p_max_similarity IS NULL OR c.similarity <= p_max_similarity)
           AND (NOT coalesce(p_unrated, false) OR c.verdict IS NULL)
    ), page AS (
        SELECT id FROM hits ORDER BY id DESC LIMIT p_limit OFFSET p_offset
    )
    SELECT jsonb_build_object(
        'total', (SELECT count(*) FROM hits),
        'rows', (SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.id DESC), '[]'::jsonb)
                   FROM page JOIN shadow_comparisons AS c USING (id)));
$$;

CREATE OR REPLACE FUNCTION ai_broker_console_comparison_summary(
    p_since double precision DEFAULT NULL,
    p_until double precision DEFAULT NULL,
    p_broker_id text DEFAULT NULL,
    p_max_similarity double precision DEFAULT NULL,
    p_unrated boolean DEFAULT false,
    p_bins integer DEFAULT 10
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- Counts, averages (unrounded: the caller rounds them) and the similarity histogram as
    -- [{bin, n}] over p_bins equal bins of [0, 1] (1 in the last one).
    WITH matching AS (
        SELECT c.similarity, c.verdict, c.shadow_latency_ms, c.n8n_latency_ms
          FROM shadow_comparisons AS c
         WHERE (p_since IS NULL OR c.received_at >= p_since)
           AND (p_until IS NULL OR c.received_at < p_until)
           AND (p_broker_id IS NULL OR c.broker_id = p_broker_id)
           AND (p_max_similarity IS NULL OR c.similarity <= p_max_similarity)
           AND (NOT coalesce(p_unrated, false) OR c.verdict IS NULL)
    )
    SELECT jsonb_build_object(
        'total', count(*),
        'complete', count(m.similarity),
        'rated', count(m.verdict),
        'better', count(*) FILTER (WHERE m.verdict = 'better'),
        'same', count(*) FILTER (WHERE m.verdict = 'same'),
        'worse', count(*) FILTER (WHERE m.verdict = 'worse'),
        'avg_similarity', avg(m.similarity),
        'below_half', count(*) FILTER (WHERE m.similarity < 0.5),
        'avg_new_latency_ms', avg(m.shadow_latency_ms),
        'avg_n8n_latency_ms', avg(m.n8n_latency_ms),
        'bins', (SELECT coalesce(jsonb_agg(jsonb_build_object('bin', h.bin, 'n', h.n)),
                                 '[]'::jsonb)
                   FROM (SELECT least(floor(similarity * p_bins)::integer, p_bins - 1) AS bin,
                                count(*) AS n
                           FROM matching WHERE similarity IS NOT NULL GROUP BY 1) AS h))
      FROM matching AS m;
$$;

CREATE OR REPLACE FUNCTION ai_broker_console_export_comparisons(
    p_since double precision DEFAULT NULL,
    p_until double precision DEFAULT NULL,
    p_broker_id text DEFAULT NULL,
    p_max_similarity double precision DEFAULT NULL,
    p_unrated boolean DEFAULT false,
    p_limit integer DEFAULT 50000
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(c) ORDER BY c.id DESC), '[]'::jsonb)
      FROM (SELECT * FROM shadow_comparisons
             WHERE (p_since IS NULL OR received_at >= p_since)
               AND (p_until IS NULL OR received_at < p_until)
               AND (p_broker_id IS NULL OR broker_id = p_broker_id)
               AND (p_max_similarity IS NULL OR similarity <= p_max_similarity)
               AND (NOT coalesce(p_unrated, false) OR verdict IS NULL)
             ORDER BY id DESC
             LIMIT p_limit) AS c;
$$;

CREATE OR REPLACE FUNCTION ai_broker_console_comparison_bounds() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- {first, last} arrival of a comparison, null without any.
    SELECT CASE WHEN count(*) > 0
                THEN jsonb_build_object('first', min(received_at), 'last', max(received_at))
           END
      FROM shadow_comparisons;
$$;

-- == operator actions ==========================================================================

CREATE OR REPLACE FUNCTION ai_broker_record_operator_action(
    p_actor text, p_action text, p_target text, p_reason text, p_now double precision
) RETURNS void
LANGUAGE sql VOLATILE SET search_path = public, pg_temp AS $$
    INSERT INTO operator_actions (at, actor, action, target, reason)
    VALUES (p_now, p_actor, p_action, p_target, p_reason);
$$;

CREATE OR REPLACE FUNCTION ai_broker_operator_actions(
    p_target text DEFAULT NULL, p_limit integer DEFAULT 50
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    -- The newest first, of one target or of all.
    SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY a.id DESC), '[]'::jsonb)
      FROM (SELECT * FROM operator_actions
             WHERE p_target IS NULL OR target = p_target
             ORDER BY id DESC
             LIMIT p_limit) AS a;
$$;

-- == version ===================================================================================

SELECT ai_broker_restrict_access();

INSERT INTO schema_meta (key, value) VALUES ('schema_version', '0003')
ON CONFLICT (key) DO UPDATE SET value = excluded.value;
INSERT INTO schema_migrations (version) VALUES ('0003') ON CONFLICT (version) DO NOTHING;

NOTIFY pgrst, 'reload schema';
