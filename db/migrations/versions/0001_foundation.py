"""Foundation: areas, suppliers, drops, quarantine, the harmonised taxonomy and the incident store.

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-23

Incidents are range-partitioned by year on ``occurred_at`` (partitions are created by the loader through
``safestats_ensure_incident_partitions``), so old years can be detached and queries prune by date. The
primary key is (id, occurred_at) because a partitioned table's keys must include the partition key; the
same shape distributes under Citus later (see issue 9).
"""
from alembic import op

from db import read_sql

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")

    op.execute("""
    CREATE TABLE access_levels (
        level       smallint PRIMARY KEY,
        code        text NOT NULL UNIQUE,
        description text NOT NULL
    );
    INSERT INTO access_levels VALUES
        (10, 'record',        'Record-level police, fire and transport data (partner analysts and above)'),
        (20, 'health_record', 'Record-level ambulance and A&E data (violence-data analysts and admins only)');
    """)

    op.execute("""
    CREATE TABLE areas (
        code          text PRIMARY KEY,
        level         text NOT NULL CHECK (level IN ('lsoa', 'msoa', 'borough')),
        name          text NOT NULL,
        parent_code   text,
        msoa_code     text,
        borough_code  text,
        vintage       smallint NOT NULL,
        region        text NOT NULL,
        ons_code      boolean NOT NULL DEFAULT true,
        source        text NOT NULL,
        area_km2      double precision NOT NULL,
        geom          geometry(MultiPolygon, 27700) NOT NULL,
        geom_wgs84    geometry(MultiPolygon, 4326) NOT NULL,
        loaded_at     timestamptz NOT NULL DEFAULT now()
    );
    COMMENT ON TABLE areas IS 'LSOA, MSOA and borough polygons; British National Grid for analysis, WGS84 for display.';
    COMMENT ON COLUMN areas.code IS 'ONS code, or (ons_code = false) a key derived from the ONS name when the boundary source carries no code';
    COMMENT ON COLUMN areas.parent_code IS 'LSOA -> MSOA -> borough';
    CREATE INDEX areas_level_idx ON areas (level);
    CREATE INDEX areas_parent_idx ON areas (parent_code);
    CREATE INDEX areas_geom_gist ON areas USING gist (geom);
    CREATE INDEX areas_lsoa_geom_gist ON areas USING gist (geom) WHERE level = 'lsoa';
    """)

    op.execute("""
    CREATE TABLE domains (
        code       text PRIMARY KEY,
        name       text NOT NULL,
        sort_order smallint NOT NULL
    );
    CREATE TABLE categories (
        id     smallint PRIMARY KEY,
        domain text NOT NULL REFERENCES domains (code),
        code   text NOT NULL UNIQUE,
        name   text NOT NULL
    );
    CREATE TABLE suppliers (
        code                 text PRIMARY KEY,
        name                 text NOT NULL,
        access_level         smallint NOT NULL REFERENCES access_levels (level),
        time_precision       text NOT NULL CHECK (time_precision IN ('month', 'day', 'minute')),
        expected_cadence     interval,
        licence              text NOT NULL,
        attribution          text NOT NULL
    );
    INSERT INTO suppliers VALUES (
        'police_uk', 'Police recorded crime and ASB (police.uk street-level files)', 10, 'month', '1 month',
        'Open Government Licence v3.0',
        'Contains public sector information licensed under the Open Government Licence v3.0. (data.police.uk, Home Office)');
    CREATE TABLE supplier_category_map (
        supplier            text NOT NULL REFERENCES suppliers (code),
        supplier_category   text NOT NULL,
        category_id         smallint NOT NULL REFERENCES categories (id),
        theme_weapon        boolean,
        theme_dava          boolean,
        theme_young_victim  boolean,
        theme_arson         boolean,
        PRIMARY KEY (supplier, supplier_category)
    );
    """)
    op.execute(read_sql("taxonomy_v1.sql"))

    op.execute("""
    CREATE TABLE drops (
        id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        supplier          text NOT NULL REFERENCES suppliers (code),
        file_name         text NOT NULL,
        sha256            char(64) NOT NULL,
        size_bytes        bigint NOT NULL,
        received_at       timestamptz NOT NULL,
        loaded_at         timestamptz,
        status            text NOT NULL CHECK (status IN ('loaded', 'rejected', 'superseded')),
        replace_key       text,
        superseded_by     bigint REFERENCES drops (id),
        encoding          text,
        rows_read         integer NOT NULL DEFAULT 0,
        rows_loaded       integer NOT NULL DEFAULT 0,
        rows_quarantined  integer NOT NULL DEFAULT 0,
        period_start      date,
        period_end        date,
        error             text,
        CHECK (status <> 'rejected' OR error IS NOT NULL)
    );
    COMMENT ON COLUMN drops.replace_key IS 'A later loaded drop with the same supplier and key replaces this one (police.uk: force|month)';
    -- A file's content is loaded at most once; rejected attempts may repeat.
    CREATE UNIQUE INDEX drops_content_once ON drops (supplier, sha256) WHERE status IN ('loaded', 'superseded');
    CREATE UNIQUE INDEX drops_one_live_per_key ON drops (supplier, replace_key) WHERE status = 'loaded';
    CREATE INDEX drops_supplier_loaded_idx ON drops (supplier, loaded_at DESC);

    CREATE TABLE quarantine (
        id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        drop_id   bigint NOT NULL REFERENCES drops (id) ON DELETE CASCADE,
        line_no   integer NOT NULL,
        raw_line  text NOT NULL,
        reason    text NOT NULL
    );
    CREATE INDEX quarantine_drop_idx ON quarantine (drop_id, line_no);
    """)

    op.execute("""
    CREATE TABLE incidents (
        id                        bigint GENERATED BY DEFAULT AS IDENTITY,
        supplier                  text NOT NULL,
        supplier_record_id        text,
        drop_id                   bigint NOT NULL,
        occurred_at               timestamptz NOT NULL,
        time_precision            text NOT NULL CHECK (time_precision IN ('month', 'day', 'minute')),
        category_id               smallint NOT NULL,
        supplier_category         text NOT NULL,
        theme_weapon              boolean,
        theme_dava                boolean,
        theme_young_victim        boolean,
        theme_night_time_economy  boolean,
        theme_arson               boolean,
        geom                      geometry(Point, 27700),
        longitude                 double precision,
        latitude                  double precision,
        location_precision        text NOT NULL CHECK (location_precision IN
                                    ('exact', 'snap_point', 'rounded_50m', 'postcode', 'street', 'borough', 'none')),
        lsoa_code                 text,
        msoa_code                 text,
        borough_code              text,
        access_level              smallint NOT NULL,
        attributes                jsonb NOT NULL DEFAULT '{}'::jsonb,
        PRIMARY KEY (id, occurred_at)
    ) PARTITION BY RANGE (occurred_at);
    COMMENT ON TABLE incidents IS 'Harmonised incidents from every supplier; one yearly partition per calendar year.';
    COMMENT ON COLUMN incidents.supplier_record_id IS 'The supplier''s own id; NULL where it gives none (police.uk ASB rows)';
    COMMENT ON COLUMN incidents.time_precision IS 'How precisely occurred_at is known: month (police.uk), day or minute';
    COMMENT ON COLUMN incidents.location_precision IS 'snap_point = police.uk anonymised point; rounded_50m = LFB dwellings; borough = no finer location';
    COMMENT ON COLUMN incidents.access_level IS 'access_levels.level needed to see this record itself (aggregates are governed separately)';
    COMMENT ON COLUMN incidents.attributes IS 'The supplier''s remaining fields, as given (including its own area codes)';
    -- Foreign keys to drops and categories are deliberately absent: the pipeline inserts a drop's row and its
    -- incidents in one transaction, and per-row FK triggers would cost more than the load itself.
    -- Every index costs 1-3 us per loaded row (measured), so only the ones the raw-table queries need:
    -- time (+ category), borough (+ time) and space. A re-issued drop's old rows are found by their period
    -- through the time index, so there is no drop_id index; area rollups come from views, not lsoa_code.
    CREATE INDEX incidents_time_category_idx ON incidents (occurred_at, category_id);
    CREATE INDEX incidents_borough_time_idx ON incidents (borough_code, occurred_at);
    CREATE INDEX incidents_geom_gist ON incidents USING gist (geom);
    """)
    op.execute(read_sql("incident_partitions.sql"))


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS safestats_ensure_incident_partitions(timestamptz, timestamptz)")
    for table in ("incidents", "quarantine", "drops", "supplier_category_map", "suppliers", "categories",
                  "domains", "areas", "access_levels"):
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
