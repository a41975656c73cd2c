-- Rollups, version 2 (migration 0009): version 1's materialised views, each now adding the counts that
-- retention folded out of the incidents table (retained_*, db/sql/retention_v1.sql), so removing old
-- records never changes a trend, map or chart. Same names, columns, grains and unique indexes as v1.
-- Refreshed CONCURRENTLY after each load and each retention run (safestats.rollups.refresh_rollups).

-- theme_mask bits (safestats.filters.THEMES): 1 weapon, 2 domestic abuse/VAWG, 4 young victim,
-- 8 night-time economy, 16 arson; a bit is set only where the supplier says TRUE. One function, so the
-- rollups and retention's folding (safestats_fold_and_remove_records) can never disagree. Inlined by the planner.
CREATE FUNCTION safestats_theme_mask(weapon boolean, dava boolean, young_victim boolean, night_time_economy boolean,
                                     arson boolean) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (CASE WHEN weapon THEN 1 ELSE 0 END | CASE WHEN dava THEN 2 ELSE 0 END
            | CASE WHEN young_victim THEN 4 ELSE 0 END | CASE WHEN night_time_economy THEN 8 ELSE 0 END
            | CASE WHEN arson THEN 16 ELSE 0 END)::smallint
$$;

CREATE MATERIALIZED VIEW rollup_area_month AS
SELECT month, supplier, category_id, theme_mask, lsoa_code, msoa_code, borough_code,
       sum(incidents)::integer AS incidents
FROM (
    SELECT (date_trunc('month', occurred_at AT TIME ZONE 'Europe/London'))::date AS month,
           supplier,
           category_id,
           safestats_theme_mask(theme_weapon, theme_dava, theme_young_victim, theme_night_time_economy,
                                theme_arson) AS theme_mask,
           coalesce(lsoa_code, '') AS lsoa_code,
           coalesce(msoa_code, '') AS msoa_code,
           coalesce(borough_code, '') AS borough_code,
           count(*) AS incidents
    FROM incidents
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    UNION ALL
    SELECT month, supplier, category_id, theme_mask, lsoa_code, msoa_code, borough_code, incidents
    FROM retained_area_month
) counted
GROUP BY 1, 2, 3, 4, 5, 6, 7
WITH NO DATA;
CREATE UNIQUE INDEX rollup_area_month_key
    ON rollup_area_month (month, supplier, category_id, theme_mask, lsoa_code, msoa_code, borough_code);
CREATE INDEX rollup_area_month_borough ON rollup_area_month (borough_code, month);
CREATE INDEX rollup_area_month_msoa ON rollup_area_month (msoa_code, month);
CREATE INDEX rollup_area_month_lsoa ON rollup_area_month (lsoa_code, month);

-- From the LSOA rollup, which already holds the retained counts.
CREATE MATERIALIZED VIEW rollup_borough_month AS
SELECT month, supplier, category_id, theme_mask, borough_code, sum(incidents)::integer AS incidents
FROM rollup_area_month
GROUP BY 1, 2, 3, 4, 5
WITH NO DATA;
CREATE UNIQUE INDEX rollup_borough_month_key
    ON rollup_borough_month (month, supplier, category_id, theme_mask, borough_code);

CREATE MATERIALIZED VIEW rollup_borough_day_hour AS
SELECT day, hour, isodow, supplier, category_id, theme_mask, borough_code, sum(incidents)::integer AS incidents
FROM (
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
           count(*) AS incidents
    FROM incidents
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    UNION ALL
    SELECT day, hour, isodow, supplier, category_id, theme_mask, borough_code, incidents
    FROM retained_borough_day_hour
) counted
GROUP BY 1, 2, 3, 4, 5, 6, 7
WITH NO DATA;
CREATE UNIQUE INDEX rollup_borough_day_hour_key
    ON rollup_borough_day_hour (day, hour, isodow, supplier, category_id, theme_mask, borough_code)
    NULLS NOT DISTINCT;

CREATE MATERIALIZED VIEW rollup_grid_month AS
SELECT month, supplier, category_id, theme_mask, borough_code, cell_x, cell_y, sum(incidents)::integer AS incidents
FROM (
    SELECT (date_trunc('month', occurred_at AT TIME ZONE 'Europe/London'))::date AS month,
           supplier,
           category_id,
           safestats_theme_mask(theme_weapon, theme_dava, theme_young_victim, theme_night_time_economy,
                                theme_arson) AS theme_mask,
           coalesce(borough_code, '') AS borough_code,
           floor(ST_X(geom) / 250)::integer AS cell_x,
           floor(ST_Y(geom) / 250)::integer AS cell_y,
           count(*) AS incidents
    FROM incidents
    WHERE geom IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    UNION ALL
    SELECT month, supplier, category_id, theme_mask, borough_code, cell_x, cell_y, incidents
    FROM retained_grid_month
) counted
GROUP BY 1, 2, 3, 4, 5, 6, 7
WITH NO DATA;
CREATE UNIQUE INDEX rollup_grid_month_key
    ON rollup_grid_month (month, supplier, category_id, theme_mask, borough_code, cell_x, cell_y);
CREATE INDEX rollup_grid_month_cell ON rollup_grid_month (cell_x, cell_y);
