-- Rollups, version 1: the pre-aggregated counts the dashboard's panels read instead of raw incidents.
-- Created by migration 0004; refreshed CONCURRENTLY after each load (safestats.rollups.refresh_rollups),
-- so a refresh never blocks an analyst's query. Each has a unique index over all its dimensions (that is
-- what REFRESH ... CONCURRENTLY needs); NULL codes are folded to '' so they take part in the uniqueness.
-- theme_mask bits (safestats.filters.THEMES): 1 weapon, 2 domestic abuse/VAWG, 4 young victim,
-- 8 night-time economy, 16 arson; a bit is set only where the supplier says TRUE.
-- Time is Europe/London local time, as the police and the GLA report it.

-- Month x supplier x category x themes x LSOA (with its MSOA and borough, which add no rows): choropleths,
-- top areas, and every chart when the selection is an MSOA or LSOA.
CREATE MATERIALIZED VIEW rollup_area_month AS
SELECT (date_trunc('month', occurred_at AT TIME ZONE 'Europe/London'))::date AS month,
       supplier,
       category_id,
       (CASE WHEN theme_weapon THEN 1 ELSE 0 END
        | CASE WHEN theme_dava THEN 2 ELSE 0 END
        | CASE WHEN theme_young_victim THEN 4 ELSE 0 END
        | CASE WHEN theme_night_time_economy THEN 8 ELSE 0 END
        | CASE WHEN theme_arson THEN 16 ELSE 0 END)::smallint AS theme_mask,
       coalesce(lsoa_code, '') AS lsoa_code,
       coalesce(msoa_code, '') AS msoa_code,
       coalesce(borough_code, '') AS borough_code,
       count(*)::integer AS incidents
FROM incidents
GROUP BY 1, 2, 3, 4, 5, 6, 7
WITH NO DATA;
CREATE UNIQUE INDEX rollup_area_month_key
    ON rollup_area_month (month, supplier, category_id, theme_mask, lsoa_code, msoa_code, borough_code);
CREATE INDEX rollup_area_month_borough ON rollup_area_month (borough_code, month);
CREATE INDEX rollup_area_month_msoa ON rollup_area_month (msoa_code, month);
CREATE INDEX rollup_area_month_lsoa ON rollup_area_month (lsoa_code, month);

-- Month x supplier x category x themes x borough, from the LSOA rollup: small enough (33 boroughs) that
-- London- and borough-level panels (headline, time series, categories, borough map) read it in a few ms.
CREATE MATERIALIZED VIEW rollup_borough_month AS
SELECT month, supplier, category_id, theme_mask, borough_code, sum(incidents)::integer AS incidents
FROM rollup_area_month
GROUP BY 1, 2, 3, 4, 5
WITH NO DATA;
CREATE UNIQUE INDEX rollup_borough_month_key
    ON rollup_borough_month (month, supplier, category_id, theme_mask, borough_code);

-- Day x local hour x supplier x category x themes x borough: day-level date ranges, time-of-day and
-- day-of-week filters, and the hour x weekday grid. hour is NULL where the supplier records no time;
-- isodow is NULL where it records only the month.
CREATE MATERIALIZED VIEW rollup_borough_day_hour AS
SELECT (occurred_at AT TIME ZONE 'Europe/London')::date AS day,
       CASE WHEN time_precision = 'minute'
            THEN extract(hour FROM occurred_at AT TIME ZONE 'Europe/London')::smallint END AS hour,
       CASE WHEN time_precision <> 'month'
            THEN extract(isodow FROM occurred_at AT TIME ZONE 'Europe/London')::smallint END AS isodow,
       supplier,
       category_id,
       (CASE WHEN theme_weapon THEN 1 ELSE 0 END
        | CASE WHEN theme_dava THEN 2 ELSE 0 END
        | CASE WHEN theme_young_victim THEN 4 ELSE 0 END
        | CASE WHEN theme_night_time_economy THEN 8 ELSE 0 END
        | CASE WHEN theme_arson THEN 16 ELSE 0 END)::smallint AS theme_mask,
       coalesce(borough_code, '') AS borough_code,
       count(*)::integer AS incidents
FROM incidents
GROUP BY 1, 2, 3, 4, 5, 6, 7
WITH NO DATA;
CREATE UNIQUE INDEX rollup_borough_day_hour_key
    ON rollup_borough_day_hour (day, hour, isodow, supplier, category_id, theme_mask, borough_code)
    NULLS NOT DISTINCT;

-- Month x supplier x category x themes x borough x 250 m British National Grid cell: the density layer.
-- cell_x, cell_y are the cell's south-west corner in metres divided by 250.
CREATE MATERIALIZED VIEW rollup_grid_month AS
SELECT (date_trunc('month', occurred_at AT TIME ZONE 'Europe/London'))::date AS month,
       supplier,
       category_id,
       (CASE WHEN theme_weapon THEN 1 ELSE 0 END
        | CASE WHEN theme_dava THEN 2 ELSE 0 END
        | CASE WHEN theme_young_victim THEN 4 ELSE 0 END
        | CASE WHEN theme_night_time_economy THEN 8 ELSE 0 END
        | CASE WHEN theme_arson THEN 16 ELSE 0 END)::smallint AS theme_mask,
       coalesce(borough_code, '') AS borough_code,
       floor(ST_X(geom) / 250)::integer AS cell_x,
       floor(ST_Y(geom) / 250)::integer AS cell_y,
       count(*)::integer AS incidents
FROM incidents
WHERE geom IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7
WITH NO DATA;
CREATE UNIQUE INDEX rollup_grid_month_key
    ON rollup_grid_month (month, supplier, category_id, theme_mask, borough_code, cell_x, cell_y);
CREATE INDEX rollup_grid_month_cell ON rollup_grid_month (cell_x, cell_y);

-- Which rollups exist, in refresh order (later issues add dependants), and when each was last refreshed.
CREATE TABLE rollup_refreshes (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    view_name     text NOT NULL,
    started_at    timestamptz NOT NULL,
    duration_ms   integer NOT NULL,
    row_count     bigint NOT NULL,
    trigger       text NOT NULL
);
CREATE INDEX rollup_refreshes_view_idx ON rollup_refreshes (view_name, started_at DESC);
