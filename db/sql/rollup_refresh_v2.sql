-- Version 2 of safestats_refresh_rollup(family, since, until) (migration 0018; version 1 is
-- db/sql/rollup_refresh_v1.sql, the tables are in db/sql/rollups_v3.sql).
--
-- Rewrites one family's months [since, until) from its source (and retained counts), in the caller's
-- transaction, and returns the months' rows; rollup_months records them. The families it reads must be
-- refreshed first for the same months (the caller goes in refresh_order). Only what changed is written, so a
-- month no drop has changed (most of a full refresh) writes nothing: no dead rows, index churn or WAL.
--
-- Why version 2: version 1 found the changes with an anti-join DELETE (a merge join that sorted every fresh
-- row) and an INSERT ... ON CONFLICT that probed the primary key once per fresh row. At 10 million
-- incidents those two took 13 of the 17 s of a year of rollup_area_month in which nothing had changed.
-- Here one hash FULL JOIN of the fresh rows with the table's rows of the months (1.6 s for that year) yields
-- just the differences: keys gone (deleted), new or changed counts (upserted).
-- Nullable key columns (the day x hour rollup's hour and isodow, smallints) are compared with NULL as -1,
-- as their NULLS NOT DISTINCT key does.
CREATE OR REPLACE FUNCTION safestats_refresh_rollup(family text, since date, until date) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    f rollup_tables%ROWTYPE;
    began timestamptz := clock_timestamp();
    in_range text;
    source text;
    same_key text;       -- r (the table) and n (fresh) have the same key
    either_key text;     -- the key columns, from whichever of r and n holds the row
    had_rows boolean;
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
                           ELSE format('coalesce(r.%1$I, -1) = coalesce(n.%1$I, -1)', a.attname) END, ' AND '),
           string_agg(format('CASE WHEN n.incidents IS NULL THEN r.%1$I ELSE n.%1$I END AS %1$I', a.attname), ', ')
      INTO same_key, either_key
    FROM unnest(string_to_array(replace(f.key_columns, ' ', ''), ',')) AS k(col)
    JOIN pg_attribute a ON a.attrelid = family::regclass AND a.attname = k.col;

    DROP TABLE IF EXISTS pg_temp.rollup_fresh;
    EXECUTE format('CREATE TEMP TABLE rollup_fresh ON COMMIT DROP AS %s', source);
    GET DIAGNOSTICS fresh_rows = ROW_COUNT;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %s)', family, in_range) INTO had_rows;
    IF NOT had_rows THEN
        -- The months' first build: nothing to compare with.
        EXECUTE format('INSERT INTO %1$I (%2$s, incidents) SELECT %2$s, incidents FROM rollup_fresh',
                       family, f.key_columns);
    ELSE
        ANALYZE rollup_fresh;
        -- The differences: n.incidents NULL = the key is gone; otherwise a new key or a changed count.
        DROP TABLE IF EXISTS pg_temp.rollup_change;
        EXECUTE format('CREATE TEMP TABLE rollup_change ON COMMIT DROP AS '
                       'SELECT %s, n.incidents FROM rollup_fresh n FULL JOIN (SELECT * FROM %I WHERE %s) r ON %s '
                       'WHERE n.incidents IS DISTINCT FROM r.incidents',
                       either_key, family, in_range, same_key);
        -- Its size for the planner: without it a DELETE of many gone keys (a month emptied) was planned as a
        -- nested loop over a table guessed tiny, minutes at 10 million incidents.
        ANALYZE rollup_change;
        EXECUTE format('DELETE FROM %I r USING rollup_change n WHERE n.incidents IS NULL AND %s AND %s', family,
                       format('r.%1$I >= %2$L::date AND r.%1$I < %3$L::date', f.time_column, since, until), same_key);
        EXECUTE format('INSERT INTO %1$I AS r (%2$s, incidents) SELECT %2$s, incidents FROM rollup_change '
                       'WHERE incidents IS NOT NULL ON CONFLICT (%2$s) DO UPDATE SET incidents = EXCLUDED.incidents',
                       family, f.key_columns);
        DROP TABLE pg_temp.rollup_change;
    END IF;
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
