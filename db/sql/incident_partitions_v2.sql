-- Yearly partitions of the incidents table, version 2 (migration 0009): as version 1, and every partition,
-- new or old, gets row-level security enabled and forced with only the owner's policy. Queries through
-- the incidents table apply its own policies (PostgreSQL ignores a partition's when the parent is read);
-- these close the side door of reading a partition directly. The web role is never granted a partition.

-- Enable and force RLS on one partition, with a full-access policy for the role that owns it.
CREATE OR REPLACE FUNCTION safestats_protect_incident_partition(part regclass)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', part);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', part);
    IF NOT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = part AND polname = 'partition_owner') THEN
        EXECUTE format('CREATE POLICY partition_owner ON %s TO %I USING (true) WITH CHECK (true)',
                       part, (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = part));
    END IF;
END;
$$;

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
            PERFORM safestats_protect_incident_partition(part::regclass);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;
