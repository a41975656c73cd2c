-- Incident partitions, version 3 (migration 0017): each year's partition is itself partitioned by calendar
-- month (Europe/London), so a large drop that opens a month is written into a fresh table with no indexes,
-- which then gets its indexes built in bulk as it is attached: about 6 us a row of PostgreSQL time instead of
-- about 11 us for the same COPY through the existing indexes (bench/README.md, "Ingest speed"). Row-level
-- security stays enabled and forced on every partition at every level (safestats_protect_incident_partition,
-- incident_partitions_v2.sql). Year partitions made before this version stay plain tables: their drops keep
-- the COPY through the indexes, and no month partitions are made under them.

-- The name of the month partition holding instant t: incidents_yYYYYmMM (London's calendar).
CREATE OR REPLACE FUNCTION safestats_incident_month_partition(t timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'incidents_y' || to_char(t AT TIME ZONE 'Europe/London', 'YYYY"m"MM')
$$;

-- safestats_ensure_incident_partitions(first, last[, with_months]) creates what is missing for every calendar
-- year and month touched by [first, last]: the year's partition (partitioned by month), then, unless
-- with_months is false, under every year partitioned so, the month's partition with its parent's indexes.
-- Safe to repeat; returns how many it created. A loader writing a fresh month partition
-- (safestats_new_incident_month below) holds that month's advisory lock until it commits, so this waits for
-- it instead of creating the same table; every month's lock is taken first, in month order, so two callers
-- never wait on each other in a cycle.
DROP FUNCTION IF EXISTS safestats_ensure_incident_partitions(timestamptz, timestamptz);
CREATE OR REPLACE FUNCTION safestats_ensure_incident_partitions(first_at timestamptz, last_at timestamptz,
                                                                with_months boolean DEFAULT true)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    y integer;
    month_start timestamptz;
    months timestamptz[] := '{}';
    created integer := 0;
    part text;
BEGIN
    month_start := date_trunc('month', first_at, 'Europe/London');
    WHILE with_months AND month_start <= last_at LOOP
        months := months || month_start;
        PERFORM pg_advisory_xact_lock(hashtext('safestats-incident-month:'
                                               || safestats_incident_month_partition(month_start)));
        month_start := date_trunc('month', month_start + interval '32 days', 'Europe/London');
    END LOOP;
    FOR y IN extract(year FROM first_at AT TIME ZONE 'Europe/London')::int
          .. extract(year FROM last_at AT TIME ZONE 'Europe/London')::int LOOP
        part := format('incidents_y%s', y);
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF incidents FOR VALUES FROM (%L) TO (%L) PARTITION BY RANGE (occurred_at)',
                part,
                make_timestamptz(y, 1, 1, 0, 0, 0, 'Europe/London'),
                make_timestamptz(y + 1, 1, 1, 0, 0, 0, 'Europe/London'));
            PERFORM safestats_protect_incident_partition(part::regclass);
            created := created + 1;
        END IF;
    END LOOP;
    FOREACH month_start IN ARRAY months LOOP
        part := safestats_incident_month_partition(month_start);
        IF to_regclass(part) IS NULL
           AND (SELECT relkind FROM pg_class WHERE oid = to_regclass(left(part, 15))) = 'p' THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           part, left(part, 15), month_start,
                           date_trunc('month', month_start + interval '32 days', 'Europe/London'));
            PERFORM safestats_protect_incident_partition(part::regclass);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;

-- Inside a loader's transaction: the fresh, index-free table for the month holding t (named as its month
-- partition, not yet attached), or NULL when that month already has its partition (or its year is a plain
-- table): the caller then COPYs through incidents as usual. The month's advisory lock is held to the end of
-- the transaction. The table takes its ids from the incidents identity, and a CHECK of the month's bounds lets
-- the attach below skip scanning it.
CREATE OR REPLACE FUNCTION safestats_new_incident_month(t timestamptz)
RETURNS regclass
LANGUAGE plpgsql AS $$
DECLARE
    part text := safestats_incident_month_partition(t);
    month_start timestamptz := date_trunc('month', t, 'Europe/London');
    month_end timestamptz := date_trunc('month', date_trunc('month', t, 'Europe/London') + interval '32 days',
                                        'Europe/London');
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('safestats-incident-month:' || part));
    IF to_regclass(part) IS NOT NULL
       OR (SELECT relkind FROM pg_class WHERE oid = to_regclass(left(part, 15))) IS DISTINCT FROM 'p' THEN
        RETURN NULL;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE incidents INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
    EXECUTE format('ALTER TABLE %I ALTER id SET DEFAULT nextval(%L), ADD CONSTRAINT %I CHECK '
                   '(occurred_at >= %L AND occurred_at < %L)', part, pg_get_serial_sequence('incidents', 'id'),
                   part || '_bounds', month_start, month_end);
    RETURN part::regclass;
END;
$$;

-- Attach the table safestats_new_incident_month(t) made, once its rows are in: ATTACH PARTITION builds each
-- index of the parent on it from its rows (a sorted bulk build), and the CHECK spares it the bounds scan.
-- ATTACH takes only a SHARE UPDATE EXCLUSIVE lock on the year's partition, so analysts' queries go on.
CREATE OR REPLACE FUNCTION safestats_attach_incident_month(t timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    part text := safestats_incident_month_partition(t);
    month_start timestamptz := date_trunc('month', t, 'Europe/London');
BEGIN
    EXECUTE format('ALTER TABLE %I ALTER id DROP DEFAULT', part);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', left(part, 15), part,
                   month_start, date_trunc('month', month_start + interval '32 days', 'Europe/London'));
    PERFORM safestats_protect_incident_partition(part::regclass);
END;
$$;
