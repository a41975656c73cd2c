-- Incident partitions, version 4 (migration 0021): a large drop that opens its month is staged over several
-- connections. Version 3 COPYed it into a fresh table and ATTACH PARTITION built its four indexes, all in the
-- drop's one transaction, so on one backend (one core) one after the other. Now helper connections, each in
-- its own committed transactions, fill a staging table (a share of the rows each) and build its indexes (one
-- index each at a time); the drop's transaction then renames it to the month's partition and attaches it,
-- which finds every index already built. The drop's transaction holds the month's advisory lock from its
-- first round trip to its end, so no other loader touches the month or its staging table meanwhile.
--
-- A staging table is committed but never readable by the web role: it is not granted, and row-level security
-- is enabled and forced on it from the start, as on every partition. A loader killed between staging and its
-- commit leaves its staging table behind, unattached; the next staging of any month drops every such table
-- whose month's lock is free (no loader is working on it), and its own month's unconditionally.

-- The staging table of the month holding t: incidents_yYYYYmMM_staged.
CREATE OR REPLACE FUNCTION safestats_staged_month_table(t timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT safestats_incident_month_partition(t) || '_staged'
$$;

-- The end of the month holding t (the next month's first instant, London's calendar): the bounds CHECK of a
-- staging table and its partition bounds when attached.
CREATE OR REPLACE FUNCTION safestats_incident_month_end(t timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT date_trunc('month', date_trunc('month', t, 'Europe/London') + interval '32 days', 'Europe/London')
$$;

-- On a helper connection (autocommit), for a loader whose transaction holds the month's advisory lock: the new
-- staging table for the month holding t, or NULL when the month has its partition already (or its year is a
-- plain table): the loader then COPYs through incidents as usual. The table takes its ids from the incidents
-- identity; a CHECK of the month's bounds lets the attach skip scanning it.
CREATE OR REPLACE FUNCTION safestats_stage_incident_month(t timestamptz)
RETURNS regclass
LANGUAGE plpgsql AS $$
DECLARE
    part text := safestats_incident_month_partition(t);
    staged text := safestats_staged_month_table(t);
    month_start timestamptz := date_trunc('month', t, 'Europe/London');
    month_end timestamptz := safestats_incident_month_end(t);
    leftover text;
BEGIN
    -- Staging tables of killed loaders: any other month's whose lock is free (held until this statement ends,
    -- so no loader can start staging it meanwhile), and this month's, whose lock the caller's loader holds.
    FOR leftover IN SELECT relname FROM pg_class
                    WHERE relname ~ '^incidents_y[0-9]{4}m[0-9]{2}_staged$' AND relkind = 'r'
                      AND relnamespace = 'public'::regnamespace LOOP
        IF leftover = staged OR pg_try_advisory_xact_lock(hashtext('safestats-incident-month:'
                                                                   || left(leftover, 18))) THEN
            EXECUTE format('DROP TABLE %I', leftover);
        END IF;
    END LOOP;
    IF to_regclass(part) IS NOT NULL
       OR (SELECT relkind FROM pg_class WHERE oid = to_regclass(left(part, 15))) IS DISTINCT FROM 'p' THEN
        RETURN NULL;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE incidents INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', staged);
    EXECUTE format('ALTER TABLE %I ALTER id SET DEFAULT nextval(%L), ADD CONSTRAINT %I CHECK '
                   '(occurred_at >= %L AND occurred_at < %L)', staged, pg_get_serial_sequence('incidents', 'id'),
                   staged || '_bounds', month_start, month_end);
    PERFORM safestats_protect_incident_partition(staged::regclass);
    RETURN staged::regclass;
END;
$$;

-- The statements that build, on a staging table, every index of incidents, each named after the parent's
-- (the table's name in place of 'incidents': incidents_y2025m01_staged_geom_gist). Slowest first, so helpers
-- taking them in turn finish close together: at 300,000 rows the GiST index took 0.34 s, the borough's (a
-- text key) 0.30 s, time and category 0.19 s, and the primary key, whose ids arrive in order, 0.10 s.
CREATE OR REPLACE FUNCTION safestats_staged_month_index_statements(staged regclass)
RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT regexp_replace(pg_get_indexdef(i.indexrelid), '^CREATE (UNIQUE )?INDEX \S+ ON ONLY \S+ ',
                          format('CREATE \1INDEX %I ON %s ', staged::text || substr(c.relname, 10), staged))
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_am a ON a.oid = c.relam
    WHERE i.indrelid = 'incidents'::regclass
    ORDER BY a.amname <> 'gist', NOT EXISTS (SELECT 1 FROM unnest(i.indcollation) k WHERE k <> 0),
             i.indisunique, c.relname
$$;

-- In the loader's transaction, once the staging table of the month holding t is filled and indexed: rename
-- it (and its bounds CHECK and indexes) to the month's partition, make its primary key from its unique index,
-- and attach it. ATTACH PARTITION finds each of the parent's indexes built, and the CHECK spares it the bounds
-- scan; it takes only a SHARE UPDATE EXCLUSIVE lock on the year's partition, so analysts' queries go on.
CREATE OR REPLACE FUNCTION safestats_attach_staged_incident_month(t timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    part text := safestats_incident_month_partition(t);
    staged text := safestats_staged_month_table(t);
    month_start timestamptz := date_trunc('month', t, 'Europe/London');
    parent_index record;
BEGIN
    EXECUTE format('ALTER TABLE %I RENAME TO %I', staged, part);
    EXECUTE format('ALTER TABLE %I RENAME CONSTRAINT %I TO %I', part, staged || '_bounds', part || '_bounds');
    FOR parent_index IN
        SELECT substr(c.relname, 10) AS suffix, k.contype
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
        WHERE i.indrelid = 'incidents'::regclass LOOP
        IF parent_index.contype IN ('p', 'u') THEN
            -- The constraint, as the parent's, on the index already built (renamed to the constraint's name).
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I %s USING INDEX %I', part, part || parent_index.suffix,
                           CASE parent_index.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END,
                           staged || parent_index.suffix);
        ELSE
            EXECUTE format('ALTER INDEX %I RENAME TO %I', staged || parent_index.suffix, part || parent_index.suffix);
        END IF;
    END LOOP;
    EXECUTE format('ALTER TABLE %I ALTER id DROP DEFAULT', part);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', left(part, 15), part,
                   month_start, safestats_incident_month_end(t));
END;
$$;

-- Version 3's in-transaction fresh table is replaced by the staging above.
DROP FUNCTION IF EXISTS safestats_new_incident_month(timestamptz);
DROP FUNCTION IF EXISTS safestats_attach_incident_month(timestamptz);
