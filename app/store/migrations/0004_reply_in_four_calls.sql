-- ai-broker 0004: a reply in four store calls, each one transaction.
--
--   admit       record the message, assign its broker, hold capacity, schedule the reply
--   claim       claim the job (burst rule), with the conversation and the pause flag
--   start_send  the job still ours, the conversation still the bot's, a send slot, the stamp
--   complete    finish the job, count the delivered reply, record the handoff
--
-- Each new function composes the functions of 0001, so every rule stays in one place. Only
-- additions: workers of the previous build go on calling the functions they know.

CREATE OR REPLACE FUNCTION ai_broker_plan_delay(p_delays jsonb, p_broker_id text)
RETURNS double precision
LANGUAGE sql IMMUTABLE SET search_path = public, pg_temp AS $$
    -- ReplyPlan.delay_for: a broker the plan does not name takes the longest delay.
    SELECT coalesce(
        (p_delays->>p_broker_id)::double precision,
        (SELECT max(value::double precision) FROM jsonb_each_text(p_delays)),
        0);
$$;

CREATE OR REPLACE FUNCTION ai_broker_schedule_job(
    p_job_id text, p_delays jsonb, p_escalation_reason text, p_now double precision
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    job reply_jobs%ROWTYPE;
    conversation jsonb;
BEGIN
    SELECT * INTO job FROM reply_jobs WHERE id = p_job_id;
    IF NOT FOUND OR job.state <> 'queued' THEN
        RETURN NULL;
    END IF;
    -- The conversation's broker, or (a customer who wrote without the lead form) the
    -- least-loaded one, assigned now; assign_broker takes the conversation's lock.
    conversation := ai_broker_assign_broker(job.conversation_id, NULL, p_now);
    IF conversation->>'status' <> 'bot' THEN
        PERFORM ai_broker_finish_job(
            p_job_id, NULL, 'skipped', p_now, p_error => 'conversation ' || (conversation->>'status'));
        RETURN (SELECT to_jsonb(j) FROM reply_jobs AS j WHERE j.id = p_job_id);
    END IF;
    IF NOT ai_broker_hold_capacity(p_job_id, conversation->>'broker_id', p_now) THEN
        -- Still queued: the broker is full (hold_capacity touched the job for the reaper).
        RETURN (SELECT to_jsonb(j) FROM reply_jobs AS j WHERE j.id = p_job_id);
    END IF;
    RETURN ai_broker_prepare_job(
        p_job_id, conversation->>'broker_id',
        ai_broker_plan_delay(p_delays, conversation->>'broker_id'), p_escalation_reason, p_now);
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_admit_inbound(
    p_message_id bigint,
    p_conversation_id bigint,
    p_content text,
    p_delivery_id text,
    p_now double precision,
    p_delays jsonb,
    p_escalation_reason text DEFAULT NULL,
    p_route_reason text DEFAULT NULL,
    p_payload text DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    outcome jsonb;
BEGIN
    outcome := ai_broker_record_inbound(
        p_message_id, p_conversation_id, p_content, p_delivery_id, p_now, 'new', p_route_reason,
        p_payload);
    IF outcome->>'status' <> 'recorded' THEN
        RETURN outcome;
    END IF;
    RETURN jsonb_set(outcome, '{job}', ai_broker_schedule_job(
        outcome->'job'->>'id', p_delays, p_escalation_reason, p_now));
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_claim_reply(
    p_job_id text,
    p_owner text,
    p_lease_s double precision,
    p_coalesce_window_s double precision,
    p_now double precision
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    claim jsonb;
BEGIN
    IF coalesce((SELECT queue_paused FROM rollout_state WHERE id = 1), false) THEN
        -- The job waits in the ledger; resume (or the reaper) enqueues it again.
        RETURN jsonb_build_object(
            'status', 'not_claimable', 'reason', 'paused', 'job', NULL, 'batch', '[]'::jsonb);
    END IF;
    claim := ai_broker_claim_job(p_job_id, p_owner, p_lease_s, p_coalesce_window_s, p_now);
    IF claim->>'status' <> 'claimed' THEN
        RETURN claim;
    END IF;
    RETURN claim || jsonb_build_object('conversation', (
        SELECT to_jsonb(c) FROM broker_conversations AS c
         WHERE c.conversation_id = (claim->'job'->>'conversation_id')::bigint));
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_start_send(
    p_job_id text,
    p_owner text,
    p_window_start double precision,
    p_allowed integer,
    p_wait_s double precision,
    p_now double precision
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    job reply_jobs%ROWTYPE;
    status text;
BEGIN
    -- The row lock orders this against a rollback cancelling the job, as in begin_send.
    SELECT * INTO job FROM reply_jobs
     WHERE id = p_job_id AND state = 'running' AND lease_owner = p_owner
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('gate', 'lost');
    END IF;
    SELECT c.status INTO status FROM broker_conversations AS c
     WHERE c.conversation_id = job.conversation_id;
    IF coalesce(status, 'bot') <> 'bot' THEN
        PERFORM ai_broker_finish_job(
            p_job_id, p_owner, 'skipped', p_now, p_error => 'conversation ' || status);
        RETURN jsonb_build_object('gate', 'not_bot', 'reason', 'conversation ' || status);
    END IF;
    IF NOT ai_broker_acquire_send_slot(p_window_start, p_allowed) THEN
        RETURN jsonb_build_object('gate', 'wait', 'wait_s', p_wait_s);
    END IF;
    RETURN jsonb_build_object('gate', 'go', 'job', ai_broker_begin_send(p_job_id, p_owner, p_now));
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_complete_job(
    p_job_id text,
    p_owner text,
    p_state text,
    p_now double precision,
    p_broker_id text,
    p_customer_messages integer,
    p_handoff_reason text DEFAULT NULL,
    p_reply_text text DEFAULT NULL,
    p_reply_message_id bigint DEFAULT NULL,
    p_used_fallback boolean DEFAULT false,
    p_fallback_reason text DEFAULT NULL,
    p_error text DEFAULT NULL,
    p_error_detail text DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    conversation bigint;
BEGIN
    SELECT conversation_id INTO conversation FROM reply_jobs WHERE id = p_job_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- The conversation's lock first, as every function takes it (set_conversation_status
    -- below takes it again, which a transaction-level advisory lock allows).
    PERFORM ai_broker_lock_conversation(conversation);
    IF NOT ai_broker_finish_job(
            p_job_id, p_owner, p_state, p_now, p_reply_text, p_reply_message_id,
            p_used_fallback, p_fallback_reason, p_error, p_error_detail) THEN
        RETURN false;
    END IF;
    PERFORM ai_broker_record_delivered_reply(
        conversation, p_broker_id, p_customer_messages, p_handoff_reason, p_now);
    IF coalesce(p_handoff_reason, '') <> '' THEN
        PERFORM ai_broker_set_conversation_status(
            conversation, 'handed_off', p_handoff_reason, p_now);
    END IF;
    RETURN true;
END;
$$;

-- == version ===================================================================================

SELECT ai_broker_restrict_access();

INSERT INTO schema_meta (key, value) VALUES ('schema_version', '0004')
ON CONFLICT (key) DO UPDATE SET value = excluded.value;
INSERT INTO schema_migrations (version) VALUES ('0004') ON CONFLICT (version) DO NOTHING;

NOTIFY pgrst, 'reload schema';
