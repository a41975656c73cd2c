-- Version 2 of safestats_rollup_source_span() (migration 0020; version 1 is in db/sql/rollups_v3.sql): the
-- span of months any rollup source holds: incidents and retention's folded counts (first month, the month
-- after the last); NULLs when there is nothing.
--
-- Why version 2: version 1 took min() and max() of occurred_at AT TIME ZONE 'Europe/London', an expression no
-- index holds, so each read every incident: 28 s at 30 million incidents, paid by every refresh after a
-- load (months_touched) and every staleness check. London time only moves each instant by an hour or two,
-- never out of order, so min() and max() of occurred_at itself, converted afterwards, are the same months,
-- and each is one descent of the (occurred_at, category_id) index of the first or last partition.
CREATE OR REPLACE FUNCTION safestats_rollup_source_span(OUT since date, OUT until date)
LANGUAGE sql STABLE AS $$
    SELECT date_trunc('month', min(m))::date, (date_trunc('month', max(m)) + interval '1 month')::date FROM (
        SELECT min(occurred_at) AT TIME ZONE 'Europe/London' AS m FROM incidents
        UNION ALL SELECT max(occurred_at) AT TIME ZONE 'Europe/London' FROM incidents
        UNION ALL SELECT min(month) FROM retained_area_month UNION ALL SELECT max(month) FROM retained_area_month
        UNION ALL SELECT min(month) FROM rollup_months UNION ALL SELECT max(month) FROM rollup_months
    ) s
$$;
