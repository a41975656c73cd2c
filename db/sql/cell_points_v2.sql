-- The packed cell points, version 2 (migration 0024): each row also carries its points counted by category and
-- themes, so a drawn polygon's cells wholly inside it are counted from a few bytes a group instead of the grid
-- rollup's rows.
--
-- Why: the polygon's whole-month counts summed the grid rollup's rows of its inside cells (211,467 rows for the
-- central polygon's 192 cells at 30M) in a hash aggregate on five keys, two of them text: 160-190 ms on one
-- core, the longest part of the drawn polygon's panels. The same counts are here already, one row per cell,
-- month, supplier, borough and access level: its points' (category, themes) groups, packed side by side with
-- their counts, are what the grid rollup holds for that cell less what retention folded (these are the records
-- still held), and the web role reads them through the view that keeps what row-level security keeps. Unpacked
-- and summed in numpy: 52-71 ms for those 192 cells.
ALTER TABLE incident_cell_points
    ADD COLUMN groups bytea NOT NULL DEFAULT '',        -- int4: category_id * 64 + theme_mask, one per group
    ADD COLUMN group_counts bytea NOT NULL DEFAULT '';  -- int4: the group's points, at the same place
ALTER TABLE incident_cell_points ALTER COLUMN groups DROP DEFAULT, ALTER COLUMN group_counts DROP DEFAULT,
    ALTER COLUMN groups SET STORAGE EXTERNAL, ALTER COLUMN group_counts SET STORAGE EXTERNAL;

-- As version 1, each point now grouped by category and themes first: the points of a group lie together in the
-- packed point columns, and each group is one value of groups and group_counts. Every aggregate of a query level
-- reads its rows in one order, so the columns stay aligned.
CREATE OR REPLACE FUNCTION safestats_refresh_cell_points(since date, until date) RETURNS bigint
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
    -- Grouped by sorting, not hashing: each group's growing bytea values would be held at once. One sort serves
    -- both levels (the outer keys are a prefix of the inner ones).
    PERFORM set_config('enable_hashagg', 'off', true);
    WHILE m < until LOOP
        INSERT INTO incident_cell_points (month, cell_x, cell_y, supplier, borough_code, access_level, points,
                                          hours, categories, codes, xs, ys, groups, group_counts)
        SELECT month, cell_x, cell_y, supplier, borough_code, access_level, sum(n)::integer,
               string_agg(hours, ''::bytea), string_agg(categories, ''::bytea), string_agg(codes, ''::bytea),
               string_agg(xs, ''::bytea), string_agg(ys, ''::bytea),
               string_agg(int4send(category_id * 64 + theme_mask), ''::bytea), string_agg(int4send(n), ''::bytea)
        FROM (SELECT month, cell_x, cell_y, supplier, borough_code, access_level, category_id, theme_mask,
                     count(*)::int4 AS n,
                     string_agg(int4send(hour), ''::bytea) AS hours,
                     string_agg(int2send(category_id), ''::bytea) AS categories,
                     string_agg(int2send((theme_mask * 4 + time_code)::int2), ''::bytea) AS codes,
                     string_agg(float8send(x), ''::bytea) AS xs, string_agg(float8send(y), ''::bytea) AS ys
              FROM (SELECT (date_trunc('month', occurred_at AT TIME ZONE 'Europe/London'))::date AS month,
                           floor(ST_X(geom) / 250)::integer AS cell_x, floor(ST_Y(geom) / 250)::integer AS cell_y,
                           supplier, coalesce(borough_code, '') AS borough_code, access_level,
                           floor(date_part('epoch', occurred_at) / 3600)::int4 AS hour, category_id,
                           safestats_theme_mask(theme_weapon, theme_dava, theme_young_victim,
                                                theme_night_time_economy, theme_arson)::int4 AS theme_mask,
                           CASE time_precision WHEN 'minute' THEN 0 WHEN 'day' THEN 1 ELSE 2 END AS time_code,
                           ST_X(geom) AS x, ST_Y(geom) AS y
                    FROM incidents
                    WHERE geom IS NOT NULL
                      AND occurred_at >= (m::timestamp AT TIME ZONE 'Europe/London')
                      AND occurred_at < ((m + interval '1 month')::timestamp AT TIME ZONE 'Europe/London')) AS p
              GROUP BY month, cell_x, cell_y, supplier, borough_code, access_level, category_id, theme_mask) AS g
        GROUP BY month, cell_x, cell_y, supplier, borough_code, access_level;
        GET DIAGNOSTICS month_rows = ROW_COUNT;
        written := written + month_rows;
        m := (m + interval '1 month')::date;
    END LOOP;
    PERFORM set_config('enable_hashagg', hashagg_setting, true);
    RETURN written;
END;
$$;

-- The view again, so that its columns include the new ones (a view's * is expanded when it is made).
CREATE OR REPLACE VIEW incident_cell_points_visible WITH (security_barrier = true) AS
SELECT * FROM incident_cell_points
WHERE access_level <= (SELECT public.safestats_record_level())
  AND ((SELECT public.safestats_all_boroughs())
       OR borough_code = ANY ((SELECT public.safestats_record_boroughs())::text[]))
  AND (SELECT public.safestats_may_break_down_to('lsoa'));
