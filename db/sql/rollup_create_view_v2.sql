-- The rollups' view builder, version 2 (migration 0013): as version 1 (rollup_create_view_v1.sql), and a family
-- with a retained_table adds that year's counts of records removed by retention (db/sql/retention_v1.sql).
-- Create and populate one family's view for ``year`` unless it exists (the views it reads must exist);
-- true when it was created. A new view is populated by a plain REFRESH: nobody reads it until the UNION ALL
-- view names it (safestats_rebuild_rollup_views).
CREATE OR REPLACE FUNCTION safestats_create_rollup_view(family text, year integer) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    f rollup_families%ROWTYPE;
    view text := family || '_y' || year;
    columns text;
    i integer := 0;
    source text;
    time_column text;
BEGIN
    SELECT * INTO STRICT f FROM rollup_families WHERE name = family;
    IF to_regclass(view) IS NOT NULL OR to_regclass(format('incidents_y%s', year)) IS NULL THEN
        RETURN false;
    END IF;
    -- always_null: REFRESH ... CONCURRENTLY first looks for duplicate rows in the new contents by sorting
    -- whole rows, which was 8 of the 17 s a 150,000-row view took (PostgreSQL 15); it looks only at rows
    -- with no NULL column, so a column that is always NULL skips a check the GROUP BY already makes
    -- redundant (each row is one group, and the unique index would refuse a duplicate anyway). The
    -- UNION ALL views leave it out.
    source := replace(f.select_sql, '{year}', year::text);
    IF f.retained_table IS NOT NULL THEN
        -- The retained table has the family's columns in the family's order; its first key column is the
        -- month or day the year is read from.
        time_column := split_part(f.unique_columns, ',', 1);
        source := format('SELECT %s, sum(incidents)::integer AS incidents FROM (%s UNION ALL SELECT * FROM %I '
                         'WHERE %I >= make_date(%s, 1, 1) AND %I < make_date(%s, 1, 1)) live_and_retained GROUP BY %s',
                         f.unique_columns, source, f.retained_table, time_column, year, time_column, year + 1,
                         f.unique_columns);
    END IF;
    EXECUTE format('CREATE MATERIALIZED VIEW %I AS SELECT *, NULL::boolean AS always_null FROM (%s) t WITH NO DATA',
                   view, source);
    EXECUTE format('CREATE UNIQUE INDEX %I ON %I (%s)%s', view || '_key', view, f.unique_columns,
                   CASE WHEN f.nulls_not_distinct THEN ' NULLS NOT DISTINCT' ELSE '' END);
    FOREACH columns IN ARRAY f.index_columns LOOP
        i := i + 1;
        EXECUTE format('CREATE INDEX %I ON %I (%s)', view || '_i' || i, view, columns);
    END LOOP;
    EXECUTE format('REFRESH MATERIALIZED VIEW %I', view);
    EXECUTE format('ANALYZE %I', view);
    RETURN true;
END;
$$;

