-- Retention of record-level rows (UK GDPR storage limitation), version 1 (migration 0013).
-- Each supplier keeps its records for suppliers.record_retention (NULL: no limit); health data shortest.
-- safestats.retention removes older records, after folding them into the retained_* tables in the same
-- transaction. Each rollup family that reads incidents names its retained_* table (rollup_families.retained_table)
-- and its year views add those counts to the live incidents' counts (rollup_create_view_v2.sql), so
-- trends, maps and charts keep the folded months. Each run and supplier is a row of retention_runs.
-- The retained_* tables hold only the rollups' own grains (month x LSOA, day x hour x borough, month x
-- 250 m cell, month x H3 hexagon), never finer, and are not granted to the web role (it reads them only through the rollups).

ALTER TABLE suppliers ADD COLUMN record_retention interval;
COMMENT ON COLUMN suppliers.record_retention IS
    'How long record-level rows are kept (from the start of the month they occurred in); NULL = no limit';
UPDATE suppliers SET record_retention = CASE
    WHEN access_level >= 20 THEN interval '3 years'     -- ambulance and A&E (ISTV) records
    ELSE interval '7 years' END;                        -- police, fire and transport records

-- The theme bits as in rollups_v1.sql (1 weapon, 2 domestic abuse/VAWG, 4 young victim, 8 night-time
-- economy, 16 arson).
CREATE TABLE retained_area_month (
    month         date NOT NULL,
    supplier      text NOT NULL,
    category_id   smallint NOT NULL,
    theme_mask    smallint NOT NULL,
    lsoa_code     text NOT NULL,
    msoa_code     text NOT NULL,
    borough_code  text NOT NULL,
    incidents     integer NOT NULL CHECK (incidents > 0),
    PRIMARY KEY (month, supplier, category_id, theme_mask, lsoa_code, msoa_code, borough_code)
);
CREATE TABLE retained_borough_day_hour (
    day           date NOT NULL,
    hour          smallint,
    isodow        smallint,
    supplier      text NOT NULL,
    category_id   smallint NOT NULL,
    theme_mask    smallint NOT NULL,
    borough_code  text NOT NULL,
    incidents     integer NOT NULL CHECK (incidents > 0),
    CONSTRAINT retained_borough_day_hour_key
        UNIQUE NULLS NOT DISTINCT (day, hour, isodow, supplier, category_id, theme_mask, borough_code)
);
CREATE TABLE retained_grid_month (
    month         date NOT NULL,
    supplier      text NOT NULL,
    category_id   smallint NOT NULL,
    theme_mask    smallint NOT NULL,
    borough_code  text NOT NULL,
    cell_x        integer NOT NULL,
    cell_y        integer NOT NULL,
    incidents     integer NOT NULL CHECK (incidents > 0),
    PRIMARY KEY (month, supplier, category_id, theme_mask, borough_code, cell_x, cell_y)
);
CREATE TABLE retained_h3_month (
    month         date NOT NULL,
    supplier      text NOT NULL,
    category_id   smallint NOT NULL,
    theme_mask    smallint NOT NULL,
    borough_code  text NOT NULL,
    h3_r8         bigint NOT NULL,
    incidents     integer NOT NULL CHECK (incidents > 0),
    PRIMARY KEY (month, supplier, category_id, theme_mask, borough_code, h3_r8)
);
COMMENT ON TABLE retained_h3_month IS 'Counts of records removed by retention, at the grain of rollup_h3_month';
COMMENT ON TABLE retained_area_month IS 'Counts of records removed by retention, at the grain of rollup_area_month';
COMMENT ON TABLE retained_borough_day_hour IS 'Counts of records removed by retention, at the grain of rollup_borough_day_hour';
COMMENT ON TABLE retained_grid_month IS 'Counts of records removed by retention, at the grain of rollup_grid_month';

CREATE TABLE retention_runs (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id                uuid NOT NULL,        -- one run covers every supplier with a retention period
    started_at            timestamptz NOT NULL,
    finished_at           timestamptz NOT NULL,
    trigger               text NOT NULL,        -- 'scheduled', 'cli', ...
    supplier              text NOT NULL REFERENCES suppliers (code),
    record_retention      interval NOT NULL,
    cutoff                timestamptz NOT NULL, -- records that occurred before this were removed
    records_folded        bigint NOT NULL,      -- records counted into the retained_* tables
    records_deleted       bigint NOT NULL,
    quarantine_deleted    bigint NOT NULL,      -- quarantined raw lines of drops wholly before the cutoff
    outcome_rows_deleted  bigint NOT NULL,      -- police.uk outcome history rows before the cutoff
    CHECK (records_folded = records_deleted)
);
COMMENT ON TABLE retention_runs IS 'One row per supplier per retention run (what was folded and removed, up to when)';
CREATE INDEX retention_runs_started_idx ON retention_runs (started_at DESC);

-- Fold one supplier's records that occurred before the cutoff into the retained_* tables, then delete
-- them, their drops' quarantined raw lines (drops wholly before the cutoff) and, for police.uk outcomes,
-- the outcome history before it. The caller runs it in one transaction per supplier; the SHARE ROW
-- EXCLUSIVE lock keeps loaders (and another retention run) from adding or removing incidents between the
-- fold and the delete, while analysts' reads go on.
CREATE FUNCTION safestats_fold_and_remove_records(p_supplier text, p_cutoff timestamptz,
                                                  OUT records_folded bigint, OUT records_deleted bigint,
                                                  OUT quarantine_deleted bigint, OUT outcome_rows_deleted bigint)
LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE incidents IN SHARE ROW EXCLUSIVE MODE;
    SELECT count(*) INTO records_folded FROM incidents WHERE supplier = p_supplier AND occurred_at < p_cutoff;

    INSERT INTO retained_area_month AS r
    SELECT (date_trunc('month', occurred_at AT TIME ZONE 'Europe/London'))::date, supplier, category_id,
           safestats_theme_mask(theme_weapon, theme_dava, theme_young_victim, theme_night_time_economy, theme_arson),
           coalesce(lsoa_code, ''), coalesce(msoa_code, ''), coalesce(borough_code, ''), count(*)
    FROM incidents WHERE supplier = p_supplier AND occurred_at < p_cutoff
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (month, supplier, category_id, theme_mask, lsoa_code, msoa_code, borough_code)
    DO UPDATE SET incidents = r.incidents + EXCLUDED.incidents;

    INSERT INTO retained_borough_day_hour AS r
    SELECT (occurred_at AT TIME ZONE 'Europe/London')::date,
           CASE WHEN time_precision = 'minute' THEN extract(hour FROM occurred_at AT TIME ZONE 'Europe/London')::smallint END,
           CASE WHEN time_precision <> 'month' THEN extract(isodow FROM occurred_at AT TIME ZONE 'Europe/London')::smallint END,
           supplier, category_id,
           safestats_theme_mask(theme_weapon, theme_dava, theme_young_victim, theme_night_time_economy, theme_arson),
           coalesce(borough_code, ''), count(*)
    FROM incidents WHERE supplier = p_supplier AND occurred_at < p_cutoff
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT ON CONSTRAINT retained_borough_day_hour_key
    DO UPDATE SET incidents = r.incidents + EXCLUDED.incidents;

    INSERT INTO retained_grid_month AS r
    SELECT (date_trunc('month', occurred_at AT TIME ZONE 'Europe/London'))::date, supplier, category_id,
           safestats_theme_mask(theme_weapon, theme_dava, theme_young_victim, theme_night_time_economy, theme_arson),
           coalesce(borough_code, ''), floor(ST_X(geom) / 250)::integer, floor(ST_Y(geom) / 250)::integer, count(*)
    FROM incidents WHERE supplier = p_supplier AND occurred_at < p_cutoff AND geom IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (month, supplier, category_id, theme_mask, borough_code, cell_x, cell_y)
    DO UPDATE SET incidents = r.incidents + EXCLUDED.incidents;

    -- The points' H3 cells are in h3_points already (safestats.retention fills them before folding).
    INSERT INTO retained_h3_month AS r
    SELECT (date_trunc('month', i.occurred_at AT TIME ZONE 'Europe/London'))::date, i.supplier, i.category_id,
           safestats_theme_mask(i.theme_weapon, i.theme_dava, i.theme_young_victim, i.theme_night_time_economy,
                                i.theme_arson),
           coalesce(i.borough_code, ''), p.h3_r8, count(*)
    FROM incidents i JOIN h3_points p ON p.longitude = i.longitude AND p.latitude = i.latitude
    WHERE i.supplier = p_supplier AND i.occurred_at < p_cutoff
    GROUP BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (month, supplier, category_id, theme_mask, borough_code, h3_r8)
    DO UPDATE SET incidents = r.incidents + EXCLUDED.incidents;

    DELETE FROM incidents WHERE supplier = p_supplier AND occurred_at < p_cutoff;
    GET DIAGNOSTICS records_deleted = ROW_COUNT;

    DELETE FROM quarantine q USING drops d
    WHERE d.id = q.drop_id AND d.supplier = p_supplier AND d.period_end < (p_cutoff AT TIME ZONE 'Europe/London')::date;
    GET DIAGNOSTICS quarantine_deleted = ROW_COUNT;

    DELETE FROM police_uk_outcome_history h USING drops d
    WHERE d.id = h.drop_id AND d.supplier = p_supplier AND h.month < (p_cutoff AT TIME ZONE 'Europe/London')::date;
    GET DIAGNOSTICS outcome_rows_deleted = ROW_COUNT;
END;
$$;

-- Which retained_* table each family that reads incidents adds to its counts.
ALTER TABLE rollup_families ADD COLUMN retained_table text;
UPDATE rollup_families SET retained_table = 'retained_' || substring(name FROM '^rollup_(.*)$')
WHERE name IN ('rollup_area_month', 'rollup_borough_day_hour', 'rollup_grid_month', 'rollup_h3_month');
