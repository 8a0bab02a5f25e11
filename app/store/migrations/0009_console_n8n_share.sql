-- ai-broker 0009: the console's view of n8n's share (what app/store/analytics.py's
-- SqliteAnalytics.n8n_share reads): the messages routed to n8n that arrived in a window, how
-- many n8n took, answered and left silent, how many it could not take, and how fast it answered.
-- The "could not take" reasons are N8N_FAILED_REASONS there.

CREATE OR REPLACE FUNCTION ai_broker_console_n8n_share(
    p_since double precision, p_until double precision
) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT jsonb_build_object(
        'taken', count(*) FILTER (WHERE state = 'forwarded' OR route_reason = 'n8n_silent'),
        'answered', count(*) FILTER (WHERE state = 'forwarded' AND n8n_replied_at IS NOT NULL),
        'silent', count(*) FILTER (WHERE route_reason = 'n8n_silent'),
        'failed', count(*) FILTER (
            WHERE route_reason IN ('n8n_failed', 'n8n_circuit_open', 'rollback_n8n_unavailable')),
        'p50', percentile_disc(0.5) WITHIN GROUP (ORDER BY n8n_replied_at - received_at)
                   FILTER (WHERE state = 'forwarded' AND n8n_replied_at IS NOT NULL))
      FROM reply_jobs
     WHERE received_at >= p_since AND received_at < p_until AND kind = 'reply';
$$;

-- == version ===================================================================================

SELECT ai_broker_restrict_access();

INSERT INTO schema_meta (key, value) VALUES ('schema_version', '0009')
ON CONFLICT (key) DO UPDATE SET value = excluded.value;
INSERT INTO schema_migrations (version) VALUES ('0009') ON CONFLICT (version) DO NOTHING;

NOTIFY pgrst, 'reload schema';
