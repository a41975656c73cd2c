-- A drawn polygon's points by 250 m cell (migration 0022; safestats.queries reads them, safestats.rollups
-- refreshes them with rollup_grid_month, in the same transaction).
--
-- Why: a polygon drawn over central London holds about a million of 30 million incidents. Its whole-month
-- counts come from the grid rollup's cells wholly inside it (db/sql/polygon_cells_v1.sql), but the points of
-- the cells on its edge, and every point of the months its hour x weekday grid needs, were read from
-- incidents: a GiST scan, a heap page and a point-in-polygon test per point, about 1 µs each (165-178 ms for
-- the edge, 215-280 ms for a year's 258,748 points, on two cores that also serve the other panels). Here each
-- cell's points of a month are one row per supplier, borough and access level, their attributes packed side by
-- side in bytea (big-endian, one value per point, the same point at the same place in every column): a
-- polygon reads a few thousand rows and unpacks them in numpy, and only the edge cells' points are tested
-- against the polygon (shapely, on the same coordinates).
--
-- The rows are records, not counts: the web role reads them only through incident_cell_points_visible, which
-- keeps what row-level security keeps of incidents (incidents_web_records: the record level and the record
-- boroughs), and a tier that may not break data down to LSOAs gets nothing, as from the grid rollup.
CREATE TABLE incident_cell_points (
    month         date NOT NULL,       -- London month of occurred_at
    cell_x        integer NOT NULL,    -- floor(ST_X(geom) / 250), as rollup_grid_month
    cell_y        integer NOT NULL,
    supplier      text NOT NULL,
    borough_code  text NOT NULL,       -- '' when none
    access_level  smallint NOT NULL,   -- the incidents' own (what row-level security compares)
    points        integer NOT NULL,
    hours         bytea NOT NULL,      -- int4: UTC hours since 1970-01-01 (floor(epoch / 3600))
    categories    bytea NOT NULL,      -- int2: category_id
    codes         bytea NOT NULL,      -- int2: theme_mask * 4 + time precision (0 minute, 1 day, 2 month)
    xs            bytea NOT NULL,      -- float8: ST_X(geom), British National Grid metres
    ys            bytea NOT NULL,      -- float8: ST_Y(geom)
    PRIMARY KEY (cell_x, cell_y, month, supplier, borough_code, access_level)
) WITH (fillfactor = 100);
-- Stored out of line but not compressed: a polygon reads every byte, and decompressing cost more than the pages.
ALTER TABLE incident_cell_points ALTER COLUMN hours SET STORAGE EXTERNAL, ALTER COLUMN categories SET STORAGE EXTERNAL,
    ALTER COLUMN codes SET STORAGE EXTERNAL, ALTER COLUMN xs SET STORAGE EXTERNAL, ALTER COLUMN ys SET STORAGE EXTERNAL;
CREATE INDEX incident_cell_points_month_idx ON incident_cell_points (month);
COMMENT ON TABLE incident_cell_points IS 'Each 250 m cell''s points of a month, packed by supplier, borough and access level: a drawn polygon''s records (db/sql/cell_points_v1.sql)';

-- Rewrite the London months [since, until) from incidents, in the caller's transaction, one month at a time (one
-- month's points sort in memory, every month's at once would spill to disk); returns the rows written. Readers
-- see the old rows until the caller commits.
CREATE FUNCTION safestats_refresh_cell_points(since date, until date) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    written bigint := 0;
    month_rows bigint;
    m date := since;
    hashagg_setting text := current_setting('enable_hashagg');
BEGIN
    IF since <> date_trunc('month', since)::date OR until <> date_trunc('month', until)::date OR until <= since THEN
        RAISE EXCEPTION 'safestats_refresh_cell_points: [%, %) is not a run of whole months', since, until;
    END IF;
    DELETE FROM incident_cell_points WHERE month >= since AND month < until;
    -- Grouped by sorting, not hashing: each group's five growing bytea values would be held at once.
    PERFORM set_config('enable_hashagg', 'off', true);
    WHILE m < until LOOP
        INSERT INTO incident_cell_points
        SELECT month, cell_x, cell_y, supplier, borough_code, access_level, count(*)::integer,
               string_agg(int4send(hour), ''::bytea), string_agg(int2send(category_id), ''::bytea),
               string_agg(int2send(code), ''::bytea), string_agg(float8send(x), ''::bytea),
               string_agg(float8send(y), ''::bytea)
        FROM (SELECT (date_trunc('month', occurred_at AT TIME ZONE 'Europe/London'))::date AS month,
                     floor(ST_X(geom) / 250)::integer AS cell_x, floor(ST_Y(geom) / 250)::integer AS cell_y,
                     supplier, coalesce(borough_code, '') AS borough_code, access_level,
                     floor(date_part('epoch', occurred_at) / 3600)::int4 AS hour, category_id,
                     (safestats_theme_mask(theme_weapon, theme_dava, theme_young_victim, theme_night_time_economy,
                                           theme_arson) * 4
                      + CASE time_precision WHEN 'minute' THEN 0 WHEN 'day' THEN 1 ELSE 2 END)::int2 AS code,
                     ST_X(geom) AS x, ST_Y(geom) AS y
              FROM incidents
              WHERE geom IS NOT NULL
                AND occurred_at >= (m::timestamp AT TIME ZONE 'Europe/London')
                AND occurred_at < ((m + interval '1 month')::timestamp AT TIME ZONE 'Europe/London')) AS p
        GROUP BY month, cell_x, cell_y, supplier, borough_code, access_level;
        GET DIAGNOSTICS month_rows = ROW_COUNT;
        written := written + month_rows;
        m := (m + interval '1 month')::date;
    END LOOP;
    PERFORM set_config('enable_hashagg', hashagg_setting, true);
    RETURN written;
END;
$$;

-- The web role's door: what incidents_web_records lets it read of the raw rows (db/sql/access_control_v1.sql),
-- and nothing for a tier whose maps stop above LSOAs.
CREATE VIEW incident_cell_points_visible WITH (security_barrier = true) AS
SELECT * FROM incident_cell_points
WHERE access_level <= (SELECT public.safestats_record_level())
  AND ((SELECT public.safestats_all_boroughs())
       OR borough_code = ANY ((SELECT public.safestats_record_boroughs())::text[]))
  AND (SELECT public.safestats_may_break_down_to('lsoa'));
COMMENT ON VIEW incident_cell_points_visible IS 'Rows of incident_cell_points the current user may see as records (security barrier; reads the safestats.* settings)';
GRANT SELECT ON incident_cell_points_visible TO safestats_web;
