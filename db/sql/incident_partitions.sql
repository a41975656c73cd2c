-- Yearly partitions of the incidents table, created on demand by the ingest pipeline.
-- safestats_ensure_incident_partitions(first, last) creates incidents_yYYYY for every calendar year
-- (Europe/London) touched by [first, last]; existing partitions are left alone, so it is safe to repeat.
CREATE OR REPLACE FUNCTION safestats_ensure_incident_partitions(first_at timestamptz, last_at timestamptz)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    y integer;
    created integer := 0;
    part text;
BEGIN
    FOR y IN extract(year FROM first_at AT TIME ZONE 'Europe/London')::int
          .. extract(year FROM last_at AT TIME ZONE 'Europe/London')::int LOOP
        part := format('incidents_y%s', y);
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF incidents FOR VALUES FROM (%L) TO (%L)',
                part,
                make_timestamptz(y, 1, 1, 0, 0, 0, 'Europe/London'),
                make_timestamptz(y + 1, 1, 1, 0, 0, 0, 'Europe/London'));
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;
