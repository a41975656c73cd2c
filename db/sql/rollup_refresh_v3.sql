-- Version 3 of safestats_refresh_rollup(family, since, until) (migration 0020; version 2 is
-- db/sql/rollup_refresh_v2.sql, which explains the hash FULL JOIN of fresh and stored rows kept here).
--
-- Rewrites one family's months [since, until) from its source (and retained counts), in the caller's
-- transaction, and returns the months' rows; rollup_months records them. The families it reads must be
-- refreshed first for the same months (the caller goes in refresh_order). Only what changed is written.
--
-- Why version 3 (bench/README.md, "Full refresh on a slower machine"): a full refresh at 30 million incidents
-- took 422 s on a machine about twice as slow as the one that measured 195 s, over the 5-minute target.
--  * The fresh counts are always a large GROUP BY and the comparison a large FULL JOIN, both best hashed
--    (spilling to disk in batches past work_mem). The planner sometimes sorted instead: it guessed the H3
--    family's join of 7.7 million incidents to their points (two float columns taken as independent) at 198
--    rows and sorted them on disk to group them (33 s of a year, 16 s hashed), and it compared a year of the
--    day x hour rollup by a merge join of two sorts on text keys (20 s, a few hashed; text sorts are slow
--    under a database's libc collation). Sorting is switched off for the function's statements.
--  * The retained counts were unioned in and everything grouped a second time even when retention had
--    folded nothing into the months (most months): that second grouping of every fresh row is now made only
--    when the retained table has rows in the months.
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
    has_retained boolean := false;
    sort_setting text := current_setting('enable_sort');
    fresh_rows bigint;
BEGIN
    SELECT * INTO STRICT f FROM rollup_tables WHERE name = family;
    IF since <> date_trunc('month', since)::date OR until <> date_trunc('month', until)::date OR until <= since THEN
        RAISE EXCEPTION 'safestats_refresh_rollup: [%, %) is not a run of whole months', since, until;
    END IF;
    in_range := format('%I >= %L::date AND %I < %L::date', f.time_column, since, f.time_column, until);
    source := replace(replace(f.select_sql, '{since}', quote_literal(since)), '{until}', quote_literal(until));
    IF f.retained_table IS NOT NULL THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %s)', f.retained_table, in_range) INTO has_retained;
    END IF;
    IF has_retained THEN
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
    PERFORM set_config('enable_sort', 'off', true);     -- hashing only, to the end (see above)
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
    PERFORM set_config('enable_sort', sort_setting, true);
    RETURN fresh_rows;
END;
$$;
