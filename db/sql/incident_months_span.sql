-- The span of months holding any data (no counts): what the dashboard's default period is computed from.
CREATE VIEW incident_months_span WITH (security_barrier = true) AS
SELECT min(month) AS first_month, max(month) AS last_month FROM rollup_borough_month;
GRANT SELECT ON incident_months_span TO safestats_web;
