-- ai-broker 0008: a watchdog for n8n's share.
--
-- A message n8n took but never answered (a workflow error, a disabled node, an expired
-- credential) would leave its customer waiting for ever. n8n's replies now mark the forwarded
-- messages they answer; the workers hand the ones still unanswered after N8N_REPLY_TIMEOUT_S to
-- the new pipeline. Only additions.

ALTER TABLE reply_jobs ADD COLUMN IF NOT EXISTS n8n_replied_at double precision;

CREATE OR REPLACE FUNCTION ai_broker_mark_n8n_answered(
    p_conversation_id bigint, p_at double precision
) RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    marked integer;
BEGIN
    UPDATE reply_jobs SET n8n_replied_at = p_at
     WHERE conversation_id = p_conversation_id AND kind = 'reply' AND state = 'forwarded'
       AND n8n_replied_at IS NULL AND received_at <= p_at;
    GET DIAGNOSTICS marked = ROW_COUNT;
    RETURN marked;
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_requeue_silent_forwards(
    p_now double precision,
    p_silent_after_s double precision,
    p_horizon_s double precision,
    p_limit integer DEFAULT 200
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    requeued jsonb;
BEGIN
    -- SKIP LOCKED: two workers' watchdogs never hand the same message on twice.
    WITH silent AS (
        SELECT id, seq, inbound_message_id FROM reply_jobs
         WHERE kind = 'reply' AND state = 'forwarded' AND n8n_replied_at IS NULL
           AND finished_at <= p_now - p_silent_after_s
           AND finished_at > p_now - p_silent_after_s - p_horizon_s
         ORDER BY seq
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    ), moved AS (
        UPDATE reply_jobs AS r
           SET state = 'queued', route = 'new', route_reason = 'n8n_silent', finished_at = NULL,
               updated_at = p_now
          FROM silent
         WHERE r.id = silent.id
        RETURNING r.*
    ), compared AS (
        -- Runs whether or not the query below reads it, as every data-modifying WITH does.
        UPDATE shadow_comparisons AS c SET n8n_source = 'silent'
          FROM silent
         WHERE c.inbound_message_id = silent.inbound_message_id AND c.n8n_reply IS NULL
        RETURNING c.id
    )
    SELECT coalesce(jsonb_agg(to_jsonb(moved) ORDER BY moved.seq), '[]'::jsonb)
      INTO requeued
      FROM moved;
    RETURN requeued;
END;
$$;

-- == version ===================================================================================

SELECT ai_broker_restrict_access();

INSERT INTO schema_meta (key, value) VALUES ('schema_version', '0008')
ON CONFLICT (key) DO UPDATE SET value = excluded.value;
INSERT INTO schema_migrations (version) VALUES ('0008') ON CONFLICT (version) DO NOTHING;

NOTIFY pgrst, 'reload schema';
