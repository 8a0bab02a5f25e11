-- ai-broker 0007: Chatwoot's headers kept with each message, so n8n gets them again.
--
-- After a rollback the unsent messages are forwarded to n8n once more; a workflow that checks
-- Chatwoot's signature needs the signature, timestamp and delivery headers that came with the
-- body. The new overloads of record_inbound and admit_inbound take them as `p_headers` (a JSON
-- object); the old ones stay, so workers of the previous build go on calling them.

ALTER TABLE reply_jobs ADD COLUMN IF NOT EXISTS inbound_headers jsonb;

CREATE OR REPLACE FUNCTION ai_broker_record_inbound(
    p_message_id bigint,
    p_conversation_id bigint,
    p_content text,
    p_delivery_id text,
    p_now double precision,
    p_route text,
    p_route_reason text,
    p_payload text,
    p_headers jsonb
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    outcome jsonb;
    job reply_jobs%ROWTYPE;
BEGIN
    outcome := ai_broker_record_inbound(
        p_message_id, p_conversation_id, p_content, p_delivery_id, p_now, p_route,
        p_route_reason, p_payload);
    IF outcome->>'status' <> 'recorded' OR p_headers IS NULL
       OR jsonb_typeof(p_headers) <> 'object' THEN
        RETURN outcome;
    END IF;
    UPDATE reply_jobs SET inbound_headers = p_headers WHERE id = outcome->'job'->>'id'
    RETURNING * INTO job;
    RETURN jsonb_set(outcome, '{job}', to_jsonb(job));
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_admit_inbound(
    p_message_id bigint,
    p_conversation_id bigint,
    p_content text,
    p_delivery_id text,
    p_now double precision,
    p_delays jsonb,
    p_escalation_reason text,
    p_route_reason text,
    p_payload text,
    p_headers jsonb
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    outcome jsonb;
BEGIN
    outcome := ai_broker_record_inbound(
        p_message_id, p_conversation_id, p_content, p_delivery_id, p_now, 'new', p_route_reason,
        p_payload, p_headers);
    IF outcome->>'status' <> 'recorded' THEN
        RETURN outcome;
    END IF;
    RETURN jsonb_set(outcome, '{job}', ai_broker_schedule_job(
        outcome->'job'->>'id', p_delays, p_escalation_reason, p_now));
END;
$$;

-- == version ===================================================================================

SELECT ai_broker_restrict_access();

INSERT INTO schema_meta (key, value) VALUES ('schema_version', '0007')
ON CONFLICT (key) DO UPDATE SET value = excluded.value;
INSERT INTO schema_migrations (version) VALUES ('0007') ON CONFLICT (version) DO NOTHING;

NOTIFY pgrst, 'reload schema';
