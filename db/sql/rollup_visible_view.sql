-- The web role's door to one materialised rollup (template: {view}, {finest_level} are filled in by
-- safestats.rollups.visible_view_sql for every rollup in safestats.rollups.ROLLUP_VIEWS).
-- Materialised views cannot have row-level security, so the rollup itself is never granted to the web role.
-- This security-barrier view runs with its owner's rights on the rollup and keeps only the rows of
-- suppliers within the user's aggregate level, and nothing at all for a tier that may not break data down
-- to the rollup's finest area level. The user's scope comes from this transaction's settings
-- (db/sql/access_control_v1.sql): no settings, no rows.
CREATE VIEW {view}_visible WITH (security_barrier = true) AS
SELECT * FROM {view}
WHERE supplier = ANY ((SELECT public.safestats_aggregate_suppliers())::text[])
  AND (SELECT public.safestats_may_break_down_to('{finest_level}'));
COMMENT ON VIEW {view}_visible IS 'Rows of {view} the current user may see in aggregates (security barrier; reads the safestats.* settings)';
GRANT SELECT ON {view}_visible TO safestats_web;
