-- Rollups, version 3 (migration 0016): the pre-aggregated counts the dashboard reads, as summary tables
-- refreshed by month. Replaces version 2's one materialised view per rollup per year under UNION ALL views
-- (db/sql/rollups_v2.sql, whose tables and functions stay for the older migrations' downgrades).
--
-- Why: a month's drop refreshed its whole year's views CONCURRENTLY (323 s at 10 million incidents, most of
-- it PostgreSQL diffing old and new contents). Each rollup is now one plain table with the same name and
-- columns the query layer already read, and a month (or any run of months) is refreshed by one function,
-- safestats_refresh_rollup(family, since, until): compute the months again from the source and write what
-- changed, in the caller's transaction. Analysts' queries never wait: a DELETE and an INSERT take
-- only ROW EXCLUSIVE locks, and until the refresh commits every reader sees the old rows (MVCC), after it
-- the new ones, all families of the refresh at once. A full refresh is the same function over every month.
--
-- The families, their SQL and their order live in rollup_tables (one row each); safestats.rollups.ROLLUPS
-- is the Python list of the same names and dependencies (a test checks they agree). A family reads
-- incidents (or another family, the same months) and, where it names a retained_* table (retention,
-- db/sql/retention_v1.sql), adds the counts retention folded out of incidents for those months.
-- rollup_months says when each family's month was last refreshed (staleness against drops) and its rows.
--
-- Version 3 slims the 500 m grid: month x supplier x category x themes x cell, without the borough (a cell
-- on a boundary was split into one row per borough); the hotspot layers that read it never filter by area.
-- The 250 m grid keeps the borough for the density tiles of a selected borough and a picked cell.

CREATE TABLE rollup_tables (
    name            text PRIMARY KEY,
    refresh_order   smallint NOT NULL UNIQUE,
    reads           text[] NOT NULL,   -- 'incidents', 'h3_points' or earlier families (the same months)
    select_sql      text NOT NULL,     -- {since} and {until}: the first month and the month after, as date literals
    key_columns     text NOT NULL,     -- the unique key, the columns select_sql returns before "incidents"
    time_column     text NOT NULL,     -- 'month' or 'day': what [since, until) restricts
    retained_table  text,              -- retention's folded counts at this family's grain, added to the live ones
    description     text NOT NULL
);

CREATE TABLE rollup_months (
    family        text NOT NULL REFERENCES rollup_tables (name) ON DELETE CASCADE,
    month         date NOT NULL,
    rows          integer NOT NULL,
    refreshed_at  timestamptz NOT NULL,  -- when the refresh that wrote it began (a drop loaded later is newer)
    PRIMARY KEY (family, month)
);
COMMENT ON TABLE rollup_months IS 'When each rollup''s month was last refreshed, and its rows: staleness against drops';

ALTER TABLE rollup_refreshes ADD COLUMN month_from date, ADD COLUMN month_to date;
COMMENT ON COLUMN rollup_refreshes.month_from IS 'First month the refresh rewrote (rollups version 3)';
COMMENT ON COLUMN rollup_refreshes.month_to IS 'Last month the refresh rewrote (rollups version 3)';

-- The tables (the query layer reads them through <name>_visible, db/sql/rollup_visible_view.sql). fillfactor
-- 100 and no other write than refresh: rows of a month are written together, so a month's rows sit together
-- on disk and a period's query reads few pages through the (month, ...) key.
CREATE TABLE rollup_area_month (
    month date NOT NULL, supplier text NOT NULL, category_id smallint NOT NULL, theme_mask smallint NOT NULL,
    lsoa_code text NOT NULL, msoa_code text NOT NULL, borough_code text NOT NULL, incidents integer NOT NULL,
    PRIMARY KEY (month, supplier, category_id, theme_mask, lsoa_code, msoa_code, borough_code));
CREATE INDEX rollup_area_month_borough_idx ON rollup_area_month (borough_code, month);
CREATE INDEX rollup_area_month_msoa_idx ON rollup_area_month (msoa_code, month);
CREATE INDEX rollup_area_month_lsoa_idx ON rollup_area_month (lsoa_code, month);

CREATE TABLE rollup_msoa_month (
    month date NOT NULL, supplier text NOT NULL, category_id smallint NOT NULL, theme_mask smallint NOT NULL,
    msoa_code text NOT NULL, borough_code text NOT NULL, incidents integer NOT NULL,
    PRIMARY KEY (month, supplier, category_id, theme_mask, msoa_code, borough_code));
CREATE INDEX rollup_msoa_month_msoa_idx ON rollup_msoa_month (msoa_code, month);
CREATE INDEX rollup_msoa_month_borough_idx ON rollup_msoa_month (borough_code, month);

CREATE TABLE rollup_borough_month (
    month date NOT NULL, supplier text NOT NULL, category_id smallint NOT NULL, theme_mask smallint NOT NULL,
    borough_code text NOT NULL, incidents integer NOT NULL,
    PRIMARY KEY (month, supplier, category_id, theme_mask, borough_code));

CREATE TABLE rollup_borough_day_hour (
    day date NOT NULL, hour smallint, isodow smallint, supplier text NOT NULL, category_id smallint NOT NULL,
    theme_mask smallint NOT NULL, borough_code text NOT NULL, incidents integer NOT NULL,
    CONSTRAINT rollup_borough_day_hour_key
        UNIQUE NULLS NOT DISTINCT (day, hour, isodow, supplier, category_id, theme_mask, borough_code));

CREATE TABLE rollup_grid_month (
    month date NOT NULL, supplier text NOT NULL, category_id smallint NOT NULL, theme_mask smallint NOT NULL,
    borough_code text NOT NULL, cell_x integer NOT NULL, cell_y integer NOT NULL, incidents integer NOT NULL,
    PRIMARY KEY (month, supplier, category_id, theme_mask, borough_code, cell_x, cell_y));
CREATE INDEX rollup_grid_month_cell_idx ON rollup_grid_month (cell_x, cell_y);

CREATE TABLE rollup_grid500_month (
    month date NOT NULL, supplier text NOT NULL, category_id smallint NOT NULL, theme_mask smallint NOT NULL,
    cell_x integer NOT NULL, cell_y integer NOT NULL, incidents integer NOT NULL,
    PRIMARY KEY (month, supplier, category_id, theme_mask, cell_x, cell_y));

CREATE TABLE rollup_h3_month (
    month date NOT NULL, supplier text NOT NULL, category_id smallint NOT NULL, theme_mask smallint NOT NULL,
    borough_code text NOT NULL, h3_r8 bigint NOT NULL, incidents integer NOT NULL,
    PRIMARY KEY (month, supplier, category_id, theme_mask, borough_code, h3_r8));
CREATE INDEX rollup_h3_month_cell_idx ON rollup_h3_month (h3_r8);

-- Incidents of [since, until) in London months: midnight in London as an instant keeps partition pruning.
INSERT INTO rollup_tables VALUES
('rollup_area_month', 1, '{incidents}', $sql$
SELECT (date_trunc('month', occurred_at AT TIME ZONE 'Europe/London'))::date AS month,
       supplier,
       category_id,
       safestats_theme_mask(theme_weapon, theme_dava, theme_young_victim, theme_night_time_economy,
                            theme_arson) AS theme_mask,
       coalesce(lsoa_code, '') AS lsoa_code,
       coalesce(msoa_code, '') AS msoa_code,
       coalesce(borough_code, '') AS borough_code,
       count(*)::integer AS incidents
FROM incidents
WHERE occurred_at >= ({since}::date::timestamp AT TIME ZONE 'Europe/London')
  AND occurred_at < ({until}::date::timestamp AT TIME ZONE 'Europe/London')
GROUP BY 1, 2, 3, 4, 5, 6, 7
$sql$, 'month, supplier, category_id, theme_mask, lsoa_code, msoa_code, borough_code', 'month',
 'retained_area_month',
 'Month x supplier x category x themes x LSOA (with its MSOA and borough, which add no rows): LSOA choropleths and every chart for an LSOA'),

('rollup_msoa_month', 2, '{rollup_area_month}', $sql$
SELECT month, supplier, category_id, theme_mask, msoa_code, borough_code, sum(incidents)::integer AS incidents
FROM rollup_area_month WHERE month >= {since}::date AND month < {until}::date
GROUP BY 1, 2, 3, 4, 5, 6
$sql$, 'month, supplier, category_id, theme_mask, msoa_code, borough_code', 'month', NULL,
 'Month x supplier x category x themes x MSOA (with its borough): MSOA choropleths and charts for an MSOA'),

('rollup_borough_month', 3, '{rollup_msoa_month}', $sql$
SELECT month, supplier, category_id, theme_mask, borough_code, sum(incidents)::integer AS incidents
FROM rollup_msoa_month WHERE month >= {since}::date AND month < {until}::date
GROUP BY 1, 2, 3, 4, 5
$sql$, 'month, supplier, category_id, theme_mask, borough_code', 'month', NULL,
 'Month x supplier x category x themes x borough: London- and borough-level panels'),

('rollup_borough_day_hour', 4, '{incidents}', $sql$
SELECT (occurred_at AT TIME ZONE 'Europe/London')::date AS day,
       CASE WHEN time_precision = 'minute'
            THEN extract(hour FROM occurred_at AT TIME ZONE 'Europe/London')::smallint END AS hour,
       CASE WHEN time_precision <> 'month'
            THEN extract(isodow FROM occurred_at AT TIME ZONE 'Europe/London')::smallint END AS isodow,
       supplier,
       category_id,
       safestats_theme_mask(theme_weapon, theme_dava, theme_young_victim, theme_night_time_economy,
                            theme_arson) AS theme_mask,
       coalesce(borough_code, '') AS borough_code,
       count(*)::integer AS incidents
FROM incidents
WHERE occurred_at >= ({since}::date::timestamp AT TIME ZONE 'Europe/London')
  AND occurred_at < ({until}::date::timestamp AT TIME ZONE 'Europe/London')
GROUP BY 1, 2, 3, 4, 5, 6, 7
$sql$, 'day, hour, isodow, supplier, category_id, theme_mask, borough_code', 'day', 'retained_borough_day_hour',
 'Day x local hour x supplier x category x themes x borough: day-level ranges, time-of-day filters, the hour x weekday grid (hour NULL without a time, isodow NULL for month precision)'),

('rollup_grid_month', 5, '{incidents}', $sql$
SELECT (date_trunc('month', occurred_at AT TIME ZONE 'Europe/London'))::date AS month,
       supplier,
       category_id,
       safestats_theme_mask(theme_weapon, theme_dava, theme_young_victim, theme_night_time_economy,
                            theme_arson) AS theme_mask,
       coalesce(borough_code, '') AS borough_code,
       floor(ST_X(geom) / 250)::integer AS cell_x,
       floor(ST_Y(geom) / 250)::integer AS cell_y,
       count(*)::integer AS incidents
FROM incidents
WHERE geom IS NOT NULL
  AND occurred_at >= ({since}::date::timestamp AT TIME ZONE 'Europe/London')
  AND occurred_at < ({until}::date::timestamp AT TIME ZONE 'Europe/London')
GROUP BY 1, 2, 3, 4, 5, 6, 7
$sql$, 'month, supplier, category_id, theme_mask, borough_code, cell_x, cell_y', 'month', 'retained_grid_month',
 'Month x supplier x category x themes x borough x 250 m British National Grid square (cell_x, cell_y = south-west corner / 250 m): density layer, a picked hotspot cell'),

('rollup_grid500_month', 6, '{rollup_grid_month}', $sql$
SELECT month, supplier, category_id, theme_mask,
       (cell_x >> 1) AS cell_x,
       (cell_y >> 1) AS cell_y,
       sum(incidents)::integer AS incidents
FROM rollup_grid_month WHERE month >= {since}::date AND month < {until}::date
GROUP BY 1, 2, 3, 4, 5, 6
$sql$, 'month, supplier, category_id, theme_mask, cell_x, cell_y', 'month', NULL,
 'Month x supplier x category x themes x 500 m British National Grid square (cell_x, cell_y = south-west corner / 500 m; no borough): hotspot layers'),

('rollup_h3_month', 7, '{incidents,h3_points}', $sql$
SELECT (date_trunc('month', i.occurred_at AT TIME ZONE 'Europe/London'))::date AS month,
       i.supplier,
       i.category_id,
       safestats_theme_mask(i.theme_weapon, i.theme_dava, i.theme_young_victim, i.theme_night_time_economy,
                            i.theme_arson) AS theme_mask,
       coalesce(i.borough_code, '') AS borough_code,
       p.h3_r8,
       count(*)::integer AS incidents
FROM incidents i
JOIN h3_points p ON p.longitude = i.longitude AND p.latitude = i.latitude
WHERE i.occurred_at >= ({since}::date::timestamp AT TIME ZONE 'Europe/London')
  AND i.occurred_at < ({until}::date::timestamp AT TIME ZONE 'Europe/London')
GROUP BY 1, 2, 3, 4, 5, 6
$sql$, 'month, supplier, category_id, theme_mask, borough_code, h3_r8', 'month', 'retained_h3_month',
 'Month x supplier x category x themes x borough x H3 resolution 8 hexagon (h3_r8: the H3 index as a 64-bit integer): hexagon density layer');

DO $$
DECLARE f record;
BEGIN
    FOR f IN SELECT name, description FROM rollup_tables LOOP
        EXECUTE format('COMMENT ON TABLE %I IS %L', f.name, f.description || ' (rollup table, refreshed by month)');
    END LOOP;
END;
$$;

-- safestats_refresh_rollup(family, since, until), which fills these tables: db/sql/rollup_refresh_v1.sql
-- (migration 0016 runs it after this file; 0018 replaces it with rollup_refresh_v2.sql).

-- The span of months any rollup source holds: incidents and retention's folded counts (first month, the
-- month after the last); NULLs when there is nothing.
CREATE FUNCTION safestats_rollup_source_span(OUT since date, OUT until date)
LANGUAGE sql STABLE AS $$
    SELECT date_trunc('month', min(m))::date, (date_trunc('month', max(m)) + interval '1 month')::date FROM (
        SELECT min(occurred_at AT TIME ZONE 'Europe/London') AS m FROM incidents
        UNION ALL SELECT max(occurred_at AT TIME ZONE 'Europe/London') FROM incidents
        UNION ALL SELECT min(month) FROM retained_area_month UNION ALL SELECT max(month) FROM retained_area_month
        UNION ALL SELECT min(month) FROM rollup_months UNION ALL SELECT max(month) FROM rollup_months
    ) s
$$;
