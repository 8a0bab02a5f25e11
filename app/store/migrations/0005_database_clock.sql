-- ai-broker 0005: leases, reaping and send windows on the database's clock.
--
-- A lease written by one host and judged by another (the reaper, a second claim) compares two
-- hosts' clocks unless both read the same one. These functions read the database's clock once
-- per call and pass it as `p_now` to the functions of 0001 and 0004, so every rule stays where
-- it was. The send window's arithmetic moves here with the clock: window start, sends allowed
-- and the wait are computed as the SQLite store does (app/store/sqlite.py), on this clock.
--
-- Only additions: workers of the previous build go on calling the functions they know, with
-- their own clocks.

-- PL/pgSQL throughout: its statements' plans are kept for the connection, where an SQL
-- function's body is planned again at every call (migration 0006 says more).

CREATE OR REPLACE FUNCTION ai_broker_clock() RETURNS double precision
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
BEGIN
    RETURN extract(epoch FROM clock_timestamp())::double precision;
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_claim_reply_on_db_clock(
    p_job_id text,
    p_owner text,
    p_lease_s double precision,
    p_coalesce_window_s double precision
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
BEGIN
    RETURN ai_broker_claim_reply(p_job_id, p_owner, p_lease_s, p_coalesce_window_s,
                                 ai_broker_clock());
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_renew_lease_on_db_clock(
    p_job_id text, p_owner text, p_lease_s double precision
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
BEGIN
    RETURN ai_broker_renew_lease(p_job_id, p_owner, p_lease_s, ai_broker_clock());
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_reap_on_db_clock(
    p_stale_after_s double precision, p_limit integer DEFAULT 500
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
BEGIN
    RETURN ai_broker_reap(ai_broker_clock(), p_stale_after_s, p_limit);
END;
$$;

-- The window `p_now` falls in for `p_rate_per_s` sends a second: its start, the sends it
-- allows and the wait until the next one (windows at least 1 s wide).
CREATE OR REPLACE FUNCTION ai_broker_send_window(
    p_rate_per_s double precision, p_now double precision,
    OUT window_start double precision, OUT allowed integer, OUT wait_s double precision
)
LANGUAGE plpgsql IMMUTABLE SET search_path = public, pg_temp AS $$
DECLARE
    width double precision := greatest(1.0, 1.0 / p_rate_per_s);
BEGIN
    window_start := width * floor(p_now / width);
    allowed := greatest(1, round(p_rate_per_s * width))::integer;
    wait_s := greatest(0.001, window_start + width - p_now);
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_start_send_on_db_clock(
    p_job_id text, p_owner text, p_rate_per_s double precision
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    now double precision := ai_broker_clock();
    w record;
BEGIN
    w := ai_broker_send_window(p_rate_per_s, now);
    RETURN ai_broker_start_send(p_job_id, p_owner, w.window_start, w.allowed, w.wait_s, now);
END;
$$;

CREATE OR REPLACE FUNCTION ai_broker_acquire_send_slot_on_db_clock(p_rate_per_s double precision)
RETURNS double precision
LANGUAGE plpgsql VOLATILE SET search_path = public, pg_temp AS $$
DECLARE
    w record;
BEGIN
    w := ai_broker_send_window(p_rate_per_s, ai_broker_clock());
    -- 0 when a slot was taken, else the seconds until the next window.
    IF ai_broker_acquire_send_slot(w.window_start, w.allowed) THEN
        RETURN 0.0;
    END IF;
    RETURN w.wait_s;
END;
$$;

-- == version ===================================================================================

SELECT ai_broker_restrict_access();

INSERT INTO schema_meta (key, value) VALUES ('schema_version', '0005')
ON CONFLICT (key) DO UPDATE SET value = excluded.value;
INSERT INTO schema_migrations (version) VALUES ('0005') ON CONFLICT (version) DO NOTHING;

NOTIFY pgrst, 'reload schema';
