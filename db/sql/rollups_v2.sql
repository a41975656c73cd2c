-- Rollups, version 2: the pre-aggregated counts the dashboard reads instead of raw incidents, split by year.
-- Created by migration 0008 (which drops version 1's four materialised views).
--
-- Each rollup ("family") is one materialised view per calendar year (Europe/London), <family>_y<YYYY>, read
-- from that year's incidents partition (incidents_y<YYYY>) or from another family's view of the same year,
-- and a plain view <family> = UNION ALL of its years on top, which is what the query layer reads. A month's
-- drop therefore refreshes only that year's views, and an old year's views are never recomputed. Years are
-- added by safestats_ensure_rollup_year(year) as partitions arrive (safestats.rollups calls it before a
-- refresh); each year's view has a unique index over all its dimensions, so it refreshes CONCURRENTLY and
-- analysts' queries keep reading the old contents meanwhile. NULL codes are folded to '' so they take part
-- in the uniqueness. Time is Europe/London local time, as the police and the GLA report it.
--
-- The families, their SQL and their order live in the table rollup_families (one row each, written below);
-- safestats.rollups.ROLLUP_VIEWS is the Python list of the same names and dependencies (a test checks they
-- agree). Changing a family's SQL is a new migration that UPDATEs its row (or adds a new one) and calls
-- safestats_recreate_rollups(), which drops every year's views and builds them again in dependency order.

-- theme_mask bits (safestats.filters.THEMES): 1 weapon, 2 domestic abuse/VAWG, 4 young victim,
-- 8 night-time economy, 16 arson; a bit is set only where the supplier says TRUE. One function so the
-- rollups (and anything else) cannot disagree; a one-expression SQL function is inlined by the planner.
CREATE FUNCTION safestats_theme_mask(weapon boolean, dava boolean, young_victim boolean,
                                     night_time_economy boolean, arson boolean)
RETURNS smallint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT ((CASE WHEN weapon THEN 1 ELSE 0 END)
          | (CASE WHEN dava THEN 2 ELSE 0 END)
          | (CASE WHEN young_victim THEN 4 ELSE 0 END)
          | (CASE WHEN night_time_economy THEN 8 ELSE 0 END)
          | (CASE WHEN arson THEN 16 ELSE 0 END))::smallint
$$;

-- H3 cell (resolution 8, as H3's 64-bit integer) of every distinct WGS84 point incidents carry. Filled by
-- safestats.rollups (the h3 package) for a year's new points just before that year's views are refreshed;
-- police.uk's anonymised snap points and LFB's rounded points repeat, so this stays far smaller than the
-- incidents. Resolution 8 (average 0.74 km2, edge 0.46 km) sits between the 250 m and 500 m squares:
-- about 2,400 hexagons cover London, enough cells for Gi* and few enough that a borough's month has counts
-- in most of them; resolution 9 (0.1 km2) would be as sparse as the 250 m grid.
CREATE TABLE h3_points (
    longitude  double precision NOT NULL,
    latitude   double precision NOT NULL,
    h3_r8      bigint NOT NULL,
    PRIMARY KEY (longitude, latitude)
);

CREATE TABLE rollup_families (
    name            text PRIMARY KEY,
    refresh_order   smallint NOT NULL UNIQUE,
    reads           text[] NOT NULL,   -- 'incidents', 'h3_points' or other families (the same year's view)
    select_sql      text NOT NULL,     -- {year} is replaced by the year
    unique_columns  text NOT NULL,
    nulls_not_distinct boolean NOT NULL DEFAULT false,
    index_columns   text[] NOT NULL DEFAULT '{}',  -- further indexes, one column list each
    description     text NOT NULL
);

INSERT INTO rollup_families VALUES
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
FROM incidents_y{year}
GROUP BY 1, 2, 3, 4, 5, 6, 7
$sql$, 'month, supplier, category_id, theme_mask, lsoa_code, msoa_code, borough_code', false,
 '{"borough_code, month","msoa_code, month","lsoa_code, month"}',
 'Month x supplier x category x themes x LSOA (with its MSOA and borough, which add no rows): LSOA choropleths and every chart for an LSOA'),

('rollup_msoa_month', 2, '{rollup_area_month}', $sql$
SELECT month, supplier, category_id, theme_mask, msoa_code, borough_code, sum(incidents)::integer AS incidents
FROM rollup_area_month_y{year}
GROUP BY 1, 2, 3, 4, 5, 6
$sql$, 'month, supplier, category_id, theme_mask, msoa_code, borough_code', false,
 '{"msoa_code, month","borough_code, month"}',
 'Month x supplier x category x themes x MSOA (with its borough): MSOA choropleths and charts for an MSOA'),

('rollup_borough_month', 3, '{rollup_msoa_month}', $sql$
SELECT month, supplier, category_id, theme_mask, borough_code, sum(incidents)::integer AS incidents
FROM rollup_msoa_month_y{year}
GROUP BY 1, 2, 3, 4, 5
$sql$, 'month, supplier, category_id, theme_mask, borough_code', false, '{}',
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
FROM incidents_y{year}
GROUP BY 1, 2, 3, 4, 5, 6, 7
$sql$, 'day, hour, isodow, supplier, category_id, theme_mask, borough_code', true, '{}',
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
FROM incidents_y{year}
WHERE geom IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7
$sql$, 'month, supplier, category_id, theme_mask, borough_code, cell_x, cell_y', false, '{"cell_x, cell_y"}',
 'Month x supplier x category x themes x borough x 250 m British National Grid square (cell_x, cell_y = south-west corner / 250 m): density layer'),

('rollup_grid500_month', 6, '{rollup_grid_month}', $sql$
SELECT month, supplier, category_id, theme_mask, borough_code,
       floor(cell_x / 2.0)::integer AS cell_x,
       floor(cell_y / 2.0)::integer AS cell_y,
       sum(incidents)::integer AS incidents
FROM rollup_grid_month_y{year}
GROUP BY 1, 2, 3, 4, 5, 6, 7
$sql$, 'month, supplier, category_id, theme_mask, borough_code, cell_x, cell_y', false, '{"cell_x, cell_y"}',
 'Month x supplier x category x themes x borough x 500 m British National Grid square (cell_x, cell_y = south-west corner / 500 m): density and hotspot layers'),

('rollup_h3_month', 7, '{incidents,h3_points}', $sql$
SELECT (date_trunc('month', i.occurred_at AT TIME ZONE 'Europe/London'))::date AS month,
       i.supplier,
       i.category_id,
       safestats_theme_mask(i.theme_weapon, i.theme_dava, i.theme_young_victim, i.theme_night_time_economy,
                            i.theme_arson) AS theme_mask,
       coalesce(i.borough_code, '') AS borough_code,
       p.h3_r8,
       count(*)::integer AS incidents
FROM incidents_y{year} i
JOIN h3_points p ON p.longitude = i.longitude AND p.latitude = i.latitude
GROUP BY 1, 2, 3, 4, 5, 6
$sql$, 'month, supplier, category_id, theme_mask, borough_code, h3_r8', false, '{"h3_r8"}',
 'Month x supplier x category x themes x borough x H3 resolution 8 hexagon (h3_r8: the H3 index as a 64-bit integer): hexagon density layer');

-- Refresh history: which view (a year's materialised view), when, how long, rows, and which drops caused it.
ALTER TABLE rollup_refreshes ADD COLUMN family text, ADD COLUMN year smallint, ADD COLUMN drop_ids bigint[];
CREATE INDEX rollup_refreshes_family_idx ON rollup_refreshes (family, year, started_at DESC);

-- The years that have views, per family.
CREATE FUNCTION safestats_rollup_years(family text) RETURNS SETOF integer
LANGUAGE sql STABLE AS $$
    SELECT substring(c.relname FROM '_y(\d{4})$')::integer
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relkind = 'm'
      AND c.relname ~ ('^' || family || '_y\d{4}$')
    ORDER BY 1
$$;

-- (Re)write each family's plain view as the UNION ALL of its years; with no year yet, an empty result of
-- the right columns (year 0's SQL, never executed, gives the column types).
CREATE FUNCTION safestats_rebuild_rollup_views() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    f record;
    parts text[];
    cols text;
BEGIN
    FOR f IN SELECT * FROM rollup_families ORDER BY refresh_order LOOP
        SELECT array_agg(format('SELECT %s FROM %I', (
                   SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
                   WHERE a.attrelid = (f.name || '_y' || y)::regclass AND a.attnum > 0 AND NOT a.attisdropped
                     AND a.attname <> 'always_null'), f.name || '_y' || y) ORDER BY y)
          INTO parts FROM safestats_rollup_years(f.name) AS y;
        IF parts IS NULL THEN
            -- Typed empty result: the family's SQL over its sources with LIMIT 0 (no partition needed).
            cols := replace(replace(replace(replace(f.select_sql,
                        'incidents_y{year}', 'incidents'),
                        'rollup_area_month_y{year}', 'rollup_area_month'),
                        'rollup_msoa_month_y{year}', 'rollup_msoa_month'),
                        'rollup_grid_month_y{year}', 'rollup_grid_month');
            parts := ARRAY[format('SELECT * FROM (%s LIMIT 0) empty', cols)];
        END IF;
        EXECUTE format('CREATE OR REPLACE VIEW %I AS %s', f.name, array_to_string(parts, E'\nUNION ALL\n'));
        EXECUTE format('COMMENT ON VIEW %I IS %L', f.name, f.description || ' (UNION ALL of one materialised view per year)');
    END LOOP;
END;
$$;

-- safestats_create_rollup_view(family, year): in rollup_create_view_v1.sql (migration 0008 runs it after this file).

-- Every family's view for ``year`` that does not exist yet, in dependency order, then the UNION ALL views
-- rewritten; returns the names created. The h3 points of the year must be filled first.
CREATE FUNCTION safestats_ensure_rollup_year(year integer) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    f record;
    created text[] := '{}';
BEGIN
    FOR f IN SELECT name FROM rollup_families ORDER BY refresh_order LOOP
        IF safestats_create_rollup_view(f.name, year) THEN
            created := created || (f.name || '_y' || year);
        END IF;
    END LOOP;
    IF cardinality(created) > 0 THEN
        PERFORM safestats_rebuild_rollup_views();
    END IF;
    RETURN created;
END;
$$;

-- Drop every year's views and the UNION ALL views (the migration that changes a family, and downgrades).
CREATE FUNCTION safestats_drop_rollups() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    f record;
    y integer;
BEGIN
    FOR f IN SELECT * FROM rollup_families ORDER BY refresh_order DESC LOOP
        EXECUTE format('DROP VIEW IF EXISTS %I', f.name);
    END LOOP;
    FOR f IN SELECT * FROM rollup_families ORDER BY refresh_order DESC LOOP
        FOR y IN SELECT safestats_rollup_years(f.name) LOOP
            EXECUTE format('DROP MATERIALIZED VIEW IF EXISTS %I', f.name || '_y' || y);
        END LOOP;
    END LOOP;
END;
$$;

-- After a family's SQL changed (a migration UPDATEd rollup_families): drop every view and build them again
-- for every year with an incidents partition. Fill the h3 points before calling it when incidents exist.
CREATE FUNCTION safestats_recreate_rollups() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    y integer;
BEGIN
    PERFORM safestats_drop_rollups();
    PERFORM safestats_rebuild_rollup_views();
    FOR y IN SELECT substring(c.relname FROM '^incidents_y(\d{4})$')::integer
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'incidents'::regclass ORDER BY 1 LOOP
        PERFORM safestats_ensure_rollup_year(y);
    END LOOP;
END;
$$;
