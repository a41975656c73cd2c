"""Migration 0005 registers the LFB and TfL bus suppliers, their categories and mappings; its downgrade
removes exactly those (and these suppliers' data), and upgrading again restores them.

Runs in a database of its own, like tests/test_migrations_and_boundaries.py, so it can go down and up
without disturbing the shared session database.
"""
from __future__ import annotations

import pytest

from db import migrate
from loaders.boundaries import load_boundaries
from loaders.pipeline import load_paths
from tests.conftest import TEST_DB_NAME, make_database, query

pytestmark = pytest.mark.shared_data


def taxonomy(url):
    return query(url, """SELECT (SELECT count(*) FROM suppliers WHERE code IN ('lfb', 'tfl_bus')),
                                (SELECT count(*) FROM categories WHERE id BETWEEN 30 AND 69),
                                (SELECT count(*) FROM supplier_category_map WHERE supplier = 'lfb'),
                                (SELECT count(*) FROM supplier_category_map WHERE supplier = 'tfl_bus'),
                                (SELECT count(*) FROM supplier_category_map WHERE supplier = 'police_uk')""")[0]


def test_fire_transport_migration_down_and_up(shared_data, tmp_path):
    url = make_database(TEST_DB_NAME + "_fire_transport")
    migrate.upgrade(url)
    assert taxonomy(url) == (2, 27, 31, 10, 14)
    assert query(url, """SELECT code, access_level, time_precision, expected_cadence::text, attribution FROM suppliers
                         WHERE code IN ('lfb', 'tfl_bus') ORDER BY 1""") == [
        ("lfb", 10, "minute", "1 mon",
         "Contains public sector information licensed under the Open Government Licence v2.0. "
         "(London Fire Brigade, London Datastore)"),
        ("tfl_bus", 10, "month", "3 mons", "Powered by TfL Open Data")]
    # Every mapping points at a category of its supplier's domain.
    assert query(url, """SELECT m.supplier, c.domain, count(*) FROM supplier_category_map m
                         JOIN categories c ON c.id = m.category_id WHERE m.supplier IN ('lfb', 'tfl_bus')
                         GROUP BY 1, 2 ORDER BY 1""") == [("lfb", "fire", 31), ("tfl_bus", "transport", 10)]

    # With these suppliers' data in place (TfL rows are borough-only; one borough's areas suffice).
    load_boundaries(url, regions=("City of London",), log=lambda *a: None)
    [result] = load_paths(url, [shared_data / "tfl" / "tfl_bus_safety_2015-01_to_2018-06.csv.gz"], progress=False)
    assert result.status == "loaded" and result.rows_loaded > 20000

    migrate.downgrade(url, "0004_rollups")
    assert taxonomy(url) == (0, 0, 0, 0, 14)
    assert query(url, "SELECT count(*) FROM incidents") == [(0,)]
    assert query(url, "SELECT count(*) FROM drops") == [(0,)]
    assert query(url, "SELECT count(*) FROM rollup_borough_month") == [(0,)]

    migrate.upgrade(url)
    assert taxonomy(url) == (2, 27, 31, 10, 14)
