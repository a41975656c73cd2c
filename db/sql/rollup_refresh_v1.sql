-- Version 1 of the function that refreshes a rollup's months (migration 0016, rollups version 3; its tables
-- are in db/sql/rollups_v3.sql). Replaced by db/sql/rollup_refresh_v2.sql in migration 0018, whose
-- downgrade runs this file again.

-- Rewrite one family's months [since, until) from its source (and retained counts), in the caller's
-- transaction; returns the months' rows. The months' rollup_months rows record it. The families it reads
-- must be refreshed first for the same months (the caller goes in refresh_order).
-- Only what changed is written: the new contents go to a temporary table, rows no longer there are
-- deleted (a hash anti-join on the key), and the rest is an INSERT ... ON CONFLICT that updates a count only
-- when it differs. A month no drop has changed (most of a full refresh) then writes nothing at all: no
-- dead rows, no index churn, no WAL; deleting and inserting every row took 2.4 times a first build at 10
-- million incidents. Nullable key columns (the day x hour rollup's hour and isodow, smallints) are
-- compared with NULL as -1, as their NULLS NOT DISTINCT key does.
CREATE OR REPLACE FUNCTION safestats_refresh_rollup(family text, since date, until date) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    f rollup_tables%ROWTYPE;
    began timestamptz := clock_timestamp();
    in_range text;
    source text;
    same_key text;
    fresh_rows bigint;
BEGIN
    SELECT * INTO STRICT f FROM rollup_tables WHERE name = family;
    IF since <> date_trunc('month', since)::date OR until <> date_trunc('month', until)::date OR until <= since THEN
        RAISE EXCEPTION 'safestats_refresh_rollup: [%, %) is not a run of whole months', since, until;
    END IF;
    in_range := format('%I >= %L::date AND %I < %L::date', f.time_column, since, f.time_column, until);
    source := replace(replace(f.select_sql, '{since}', quote_literal(since)), '{until}', quote_literal(until));
    IF f.retained_table IS NOT NULL THEN
        source := format('SELECT %s, sum(incidents)::integer AS incidents FROM (%s UNION ALL SELECT %s, incidents '
                         'FROM %I WHERE %s) live_and_retained GROUP BY %s',
                         f.key_columns, source, f.key_columns, f.retained_table, in_range, f.key_columns);
    END IF;
    SELECT string_agg(CASE WHEN a.attnotnull THEN format('r.%1$I = n.%1$I', a.attname)
                           ELSE format('coalesce(r.%1$I, -1) = coalesce(n.%1$I, -1)', a.attname) END, ' AND ')
      INTO same_key
    FROM unnest(string_to_array(replace(f.key_columns, ' ', ''), ',')) AS k(col)
    JOIN pg_attribute a ON a.attrelid = family::regclass AND a.attname = k.col;

    DROP TABLE IF EXISTS pg_temp.rollup_fresh;
    EXECUTE format('CREATE TEMP TABLE rollup_fresh ON COMMIT DROP AS %s', source);
    GET DIAGNOSTICS fresh_rows = ROW_COUNT;
    ANALYZE rollup_fresh;
    EXECUTE format('DELETE FROM %I r WHERE %s AND NOT EXISTS (SELECT 1 FROM rollup_fresh n WHERE %s)',
                   family, format('r.%1$I >= %2$L::date AND r.%1$I < %3$L::date', f.time_column, since, until),
                   same_key);
    EXECUTE format('INSERT INTO %1$I AS r (%2$s, incidents) SELECT %2$s, incidents FROM rollup_fresh '
                   'ON CONFLICT (%2$s) DO UPDATE SET incidents = EXCLUDED.incidents '
                   'WHERE r.incidents <> EXCLUDED.incidents', family, f.key_columns);
    EXECUTE format(
        'INSERT INTO rollup_months (family, month, rows, refreshed_at)
         SELECT %L, m::date, coalesce(c.n, 0), %L::timestamptz
         FROM generate_series(%L::timestamp, %L::timestamp - interval ''1 month'', interval ''1 month'') m
         LEFT JOIN (SELECT date_trunc(''month'', %I)::date AS month, count(*)::integer AS n FROM rollup_fresh GROUP BY 1) c
                ON c.month = m::date
         ON CONFLICT (family, month) DO UPDATE SET rows = EXCLUDED.rows, refreshed_at = EXCLUDED.refreshed_at',
        family, began, since, until, f.time_column);
    DROP TABLE pg_temp.rollup_fresh;
    RETURN fresh_rows;
END;
$$;
