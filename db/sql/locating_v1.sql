-- Locating records without coordinates (migration 0012): ONS Postcode Directory centroids, the street
-- gazetteer built from police.uk "On or near ..." locations, each incident's location confidence, and the
-- share of each drop located by each method (safestats/location_levels.py names the methods).

CREATE TABLE postcodes (
    postcode      text PRIMARY KEY,
    easting       integer NOT NULL,
    northing      integer NOT NULL,
    geom          geometry(Point, 27700) NOT NULL,
    longitude     double precision NOT NULL,
    latitude      double precision NOT NULL,
    laua_code     text NOT NULL,
    lsoa11_code   text,
    lsoa21_code   text,
    terminated    text,
    source_file   text NOT NULL,
    loaded_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE postcodes IS 'ONS Postcode Directory (ONSPD) centroids with a grid reference, loaded by safestats postcodes FILE';
COMMENT ON COLUMN postcodes.postcode IS 'ONSPD pcds: the postcode with one space (SW9 8AB)';
COMMENT ON COLUMN postcodes.laua_code IS 'ONSPD oslaua: the local authority (a London borough is E09000001-E09000033)';
COMMENT ON COLUMN postcodes.terminated IS 'ONSPD doterm (YYYYMM) when the postcode is no longer in use; NULL while live';
CREATE INDEX postcodes_laua_idx ON postcodes (laua_code);

CREATE TABLE gazetteer_streets (
    borough_code  text NOT NULL,
    name_key      text NOT NULL,
    name          text NOT NULL,
    easting       double precision NOT NULL,
    northing      double precision NOT NULL,
    points        integer NOT NULL,
    incidents     integer NOT NULL,
    spread_m      double precision NOT NULL,
    PRIMARY KEY (borough_code, name_key)
);
COMMENT ON TABLE gazetteer_streets IS 'Street and place names per borough from police.uk "On or near ..." locations, rebuilt after police.uk loads (loaders/locating.py)';
COMMENT ON COLUMN gazetteer_streets.name_key IS 'The name normalised for matching (case, punctuation, St/Street, Rd/Road ...)';
COMMENT ON COLUMN gazetteer_streets.spread_m IS 'Farthest of the name''s snap points from their centre: long streets locate less precisely';

CREATE TABLE gazetteer_refreshes (
    refreshed_at  timestamptz NOT NULL DEFAULT now() PRIMARY KEY,
    streets       integer NOT NULL,
    source_points integer NOT NULL,
    seconds       double precision NOT NULL
);

CREATE TABLE drop_location_quality (
    drop_id          bigint NOT NULL REFERENCES drops (id) ON DELETE CASCADE,
    method           text NOT NULL CHECK (method IN ('exact', 'postcode', 'gazetteer', 'borough', 'unlocated')),
    rows             integer NOT NULL,
    mean_confidence  real,
    PRIMARY KEY (drop_id, method)
);
COMMENT ON TABLE drop_location_quality IS 'Rows of each drop located by each method, written with the drop';

-- Existing rows read the default (100) without a table rewrite; the few rows the old loaders located
-- coarsely are set below; the default is then dropped, so a writer that does not assess a row leaves NULL.
ALTER TABLE incidents ADD COLUMN location_confidence smallint NOT NULL DEFAULT 100
    CHECK (location_confidence BETWEEN 0 AND 100);
UPDATE incidents SET location_confidence = CASE
        WHEN location_precision = 'none' THEN 0
        WHEN supplier = 'istv_ed' AND location_precision = 'borough' THEN 40
        WHEN location_precision = 'postcode' THEN 90
        WHEN location_precision = 'street' THEN 70
        ELSE 100 END
    WHERE location_precision IN ('none', 'postcode', 'street') OR supplier = 'istv_ed';
ALTER TABLE incidents ALTER COLUMN location_confidence DROP NOT NULL, ALTER COLUMN location_confidence DROP DEFAULT;
COMMENT ON COLUMN incidents.location_confidence IS '0-100: how sure the location is right at its precision (100: as the supplier states it); NULL: not assessed';

INSERT INTO drop_location_quality (drop_id, method, rows, mean_confidence)
SELECT drop_id, method, count(*), avg(location_confidence)
FROM (SELECT drop_id, location_confidence, CASE location_precision
        WHEN 'exact' THEN 'exact' WHEN 'snap_point' THEN 'exact' WHEN 'rounded_50m' THEN 'exact'
        WHEN 'postcode' THEN 'postcode' WHEN 'street' THEN 'gazetteer' WHEN 'borough' THEN 'borough'
        ELSE 'unlocated' END AS method FROM incidents) i
GROUP BY drop_id, method;
