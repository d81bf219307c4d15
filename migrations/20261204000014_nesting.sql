-- Structs nest at most 16 levels from this release on (domain::input::MAX_NESTING),
-- so that whatever is stored and served decodes in every standard protobuf client
-- (prost and upb stop at 100 message levels; each level of objects is three).
-- Values stored before it may nest deeper: this finds them once, on upgrade,
-- into too_deep_values, and every replica warns about them at start until an
-- operator has dealt with them (docs/OPERATIONS.md, "Values nested too deep").

-- How many levels of objects and arrays a JSON value nests (a scalar: 0).
CREATE FUNCTION json_nesting(j jsonb) RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN CASE jsonb_typeof(j)
        WHEN 'object' THEN 1 + coalesce((SELECT max(json_nesting(v)) FROM jsonb_each(j) AS e(k, v)), 0)
        WHEN 'array' THEN 1 + coalesce((SELECT max(json_nesting(v)) FROM jsonb_array_elements(j) AS a(v)), 0)
        ELSE 0
    END;
END
$$;

CREATE TABLE too_deep_values (
    table_name  text        NOT NULL,
    -- The row: a session's id, or an event's session_id/seq.
    row_key     text        NOT NULL,
    column_name text        NOT NULL,
    nesting     integer     NOT NULL,
    found_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, row_key, column_name)
);

-- Records every stored value served as a Struct that nests deeper than
-- max_nesting; returns how many it recorded anew. A value nesting n levels
-- has at least 2n characters, so shorter ones are not measured.
CREATE FUNCTION find_too_deep_values(max_nesting integer) RETURNS bigint
LANGUAGE sql AS $$
    WITH measured AS (
        SELECT 'sessions' AS table_name, id::text AS row_key, 'config' AS column_name, json_nesting(config) AS nesting
          FROM sessions WHERE length(config::text) > 2 * max_nesting
        UNION ALL
        SELECT 'sessions', id::text, 'report', json_nesting(report)
          FROM sessions WHERE length(report::text) > 2 * max_nesting
        UNION ALL
        SELECT 'sessions', id::text, 'failure', json_nesting(failure)
          FROM sessions WHERE length(failure::text) > 2 * max_nesting
        UNION ALL
        SELECT 'session_events', session_id::text || '/' || seq, 'details', json_nesting(details)
          FROM session_events WHERE length(details::text) > 2 * max_nesting
    ), recorded AS (
        INSERT INTO too_deep_values (table_name, row_key, column_name, nesting)
        SELECT * FROM measured WHERE nesting > max_nesting
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT count(*) FROM recorded
$$;

-- 19: the 16 levels a request may send, and the three this service wraps
-- around them (a config change event's changes list and its entry).
SELECT find_too_deep_values(19);
