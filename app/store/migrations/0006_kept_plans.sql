-- ai-broker 0006: the small functions every reply calls, in PL/pgSQL.
--
-- PostgreSQL plans the body of an SQL-language function again at every call (it cannot
-- inline these: each sets search_path), where PL/pgSQL keeps its statements' plans for the
-- connection. Measured with the four calls of a reply on one connection: about 12 % less
-- wall time per reply at the same machine speed (docs/performance.md). Same names,
-- signatures and results as in 0001 and 0004; only the language changes, so workers of the
-- previous build go on as before.

CREATE OR REPLACE FUNCTION ai_broker_is_terminal(p_state text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE SET search_path = public, pg_temp AS $$
BEGIN
    -- app.domain.jobs.TERMINAL_STATES (a test checks that the two lists agree).
    RETURN p_state IN (
        'sent', 'handed_off', 'merged', 'skipped', 'failed', 'cancelled', 'recorded', 'forwarded');
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_new_job_id() RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
BEGIN
    -- The SQLite store's uuid4().hex, so job ids look the same whichever store made them.
    RETURN replace(gen_random_uuid()::text, '-', '');
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_lock_conversation(p_conversation_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
BEGIN
    -- See 0001: one conversation's ledger changes queue behind each other until the
    -- transaction ends.
    PERFORM pg_advisory_xact_lock(
        hashtextextended('ai_broker:conversation:' || p_conversation_id, 0));
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_record_delivered_reply(
    p_conversation_id bigint,
    p_broker_id text,
    p_customer_messages integer,
    p_handoff_reason text,
    p_now double precision
) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE broker_conversations
       SET message_count = message_count + p_customer_messages, last_reply_at = p_now,
           updated_at = p_now
     WHERE conversation_id = p_conversation_id;
    UPDATE ai_brokers
       SET messages_handled = messages_handled + p_customer_messages,
           handoffs = handoffs + CASE WHEN coalesce(p_handoff_reason, '') <> '' THEN 1 ELSE 0 END,
           updated_at = p_now
     WHERE id = p_broker_id;
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_prepare_job(
    p_job_id text,
    p_broker_id text,
    p_delay_s double precision,
    p_escalation_reason text,
    p_now double precision
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    job reply_jobs%ROWTYPE;
BEGIN
    UPDATE reply_jobs
       SET state = 'waiting', broker_id = p_broker_id, delay_s = p_delay_s,
           due_at = p_now + p_delay_s, escalation_reason = p_escalation_reason, updated_at = p_now
     WHERE id = p_job_id AND state = 'queued'
    RETURNING * INTO job;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN to_jsonb(job);
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_plan_delay(p_delays jsonb, p_broker_id text)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE SET search_path = public, pg_temp AS $$
BEGIN
    -- ReplyPlan.delay_for: a broker the plan does not name takes the longest delay.
    RETURN coalesce(
        (p_delays->>p_broker_id)::double precision,
        (SELECT max(value::double precision) FROM jsonb_each_text(p_delays)),
        0);
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_renew_lease(
    p_job_id text, p_owner text, p_lease_s double precision, p_now double precision
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
BEGIN
    UPDATE reply_jobs SET lease_expires_at = p_now + p_lease_s, updated_at = p_now
     WHERE id = p_job_id AND state = 'running' AND lease_owner = p_owner;
    RETURN FOUND;
END;
$$;

-- == version ===================================================================================

SELECT ai_broker_restrict_access();

INSERT INTO schema_meta (key, value) VALUES ('schema_version', '0006')
ON CONFLICT (key) DO UPDATE SET value = excluded.value;
INSERT INTO schema_migrations (version) VALUES ('0006') ON CONFLICT (version) DO NOTHING;

NOTIFY pgrst, 'reload schema';
