-- Ingest step: move a staged drop's located rows into the live incidents table.
-- The loader has already projected each point (easting/northing in EPSG:27700, longitude/latitude in
-- WGS84) and assigned its LSOA, MSOA and borough (loaders/areas.py). Rows without a point are kept only
-- when the supplier named their borough (borough_hint); everything else was quarantined before this runs.
INSERT INTO incidents (
    supplier, supplier_record_id, drop_id, occurred_at, time_precision, category_id, supplier_category,
    theme_weapon, theme_dava, theme_young_victim, theme_night_time_economy, theme_arson,
    geom, longitude, latitude, location_precision, lsoa_code, msoa_code, borough_code, access_level, attributes)
SELECT %(supplier)s, s.supplier_record_id, %(drop_id)s, s.occurred_at, s.time_precision, s.category_id,
       s.supplier_category, s.theme_weapon, s.theme_dava, s.theme_young_victim, s.theme_night_time_economy,
       s.theme_arson,
       CASE WHEN s.easting IS NOT NULL THEN ST_SetSRID(ST_MakePoint(s.easting, s.northing), 27700) END,
       s.longitude, s.latitude, s.location_precision, s.lsoa_code, s.msoa_code,
       coalesce(s.borough_code, s.borough_hint), s.access_level, s.attributes
FROM staging_incidents s;
