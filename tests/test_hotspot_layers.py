"""The map's hotspot layers in the query layer, on the real police.uk files: every number equals what esda
(PySAL) or ``safestats.hotspots`` gives on incidents counted directly with SQL, for several filter states.

Gi* on 500 m cells and on LSOAs equals ``esda.G_Local(star=True)`` to 1e-6 on directly counted cells/LSOAs
with the same fixed distance band; the classes drawn are exactly the esda z-scores past the chosen
confidence (with and without the FDR correction); the period comparison's counts and classes, the emerging
hot spot categories and the kernel density surface equal their definitions on direct counts; and a picked
hotspot cell filters every panel to exactly the incidents inside it, whichever source answers.
"""
from __future__ import annotations

import warnings
from dataclasses import replace
from datetime import date

import numpy as np
import pytest

from db import get_engine
from safestats import hotspots, queries
from safestats.filters import FilterState
from tests.conftest import query
from tests.test_queries import ANALYST, _sql_conditions, police  # noqa: F401 (police: the loaded real files)

STATES = {
    "whole months (grid rollup)": FilterState(date_from=date(2023, 1, 1), date_to=date(2023, 5, 31)),
    "burglary, default period": FilterState(categories=(3,)),
    "day range (raw points)": FilterState(date_from=date(2022, 8, 15), date_to=date(2023, 1, 10)),
    "crime domain, a borough selected (ignored by the layer)": FilterState(domains=("crime",),
                                                                           borough_code="E09000007"),
}


def _esda(points, counts, band):
    import esda
    from libpysal.weights import DistanceBand

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = DistanceBand(np.asarray(points, dtype=float), threshold=band, binary=True, silence_warnings=True)
        return esda.G_Local(np.asarray(counts, dtype=float), w, transform="B", star=True, permutations=0).Zs


def _direct_cells(url, state, period, cell_m):
    where, params = _sql_conditions(state.without_spatial_selection(), period)
    return {(int(i), int(j)): int(n) for i, j, n in query(url, f"""
        SELECT floor(ST_X(geom) / {cell_m}), floor(ST_Y(geom) / {cell_m}), count(*) FROM incidents
        WHERE geom IS NOT NULL AND {where} GROUP BY 1, 2""", params)}


def _direct_grid_z(url, engine, state, period, cell_m=queries.HOTSPOT_CELL_M):
    xs, ys = queries.study_area_cells(engine, cell_m)
    direct = _direct_cells(url, state, period, cell_m)
    counts = np.array([direct.get((i, j), 0) for i, j in zip(xs, ys)], dtype=float)
    points = [((i + 0.5) * cell_m, (j + 0.5) * cell_m) for i, j in zip(xs, ys)]
    z = _esda(points, counts, hotspots.default_band_m(cell_m))
    return [f"{i}:{j}" for i, j in zip(xs, ys)], counts, z


def _expected_classes(z, fdr, confidence):
    classes = hotspots.classify(z, fdr)
    return np.where(np.abs(classes) >= confidence, classes, 0)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", list(STATES))
@pytest.mark.parametrize("confidence, fdr", [(90, False), (99, True)])
def test_gi_grid_layer_equals_esda_on_directly_counted_cells(police, name, confidence, fdr):  # noqa: F811
    engine = get_engine(police)
    state = replace(STATES[name], hotspot="gi_grid", hotspot_confidence=confidence, hotspot_fdr=fdr)
    layer = queries.hotspot_map_layer(engine, state, user=ANALYST)
    period = queries.current_period(engine, state)
    cells, counts, z = _direct_grid_z(police, engine, state, period)
    expected = _expected_classes(z, fdr, confidence)
    drawn = {f["properties"]["cell"]: f["properties"] for f in layer.geojson["features"]}
    assert layer.incidents == counts.sum() > 0
    assert set(drawn) == {cell for cell, c in zip(cells, expected) if c != 0}, "exactly the significant cells"
    assert drawn, name
    index = {cell: k for k, cell in enumerate(cells)}
    for cell, props in drawn.items():
        k = index[cell]
        assert abs(props["z"] - z[k]) < 1e-6 and props["count"] == counts[k] and props["class"] == expected[k]
        assert props["p"] == pytest.approx(hotspots.normal_two_sided_p(np.array([z[k]]))[0], abs=1e-6)
        assert ("p_fdr" in props) == fdr


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["whole months (grid rollup)", "burglary, default period"])
def test_gi_lsoa_layer_equals_esda_on_directly_counted_lsoas(police, name):  # noqa: F811
    engine = get_engine(police)
    state = replace(STATES[name], hotspot="gi_lsoa")
    layer = queries.hotspot_map_layer(engine, state, user=ANALYST)
    period = queries.current_period(engine, state)
    rows = query(police, "SELECT code, ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)) FROM areas "
                         "WHERE level = 'lsoa' AND region = 'london' ORDER BY code")
    where, params = _sql_conditions(state, period)
    direct = dict(query(police, f"SELECT lsoa_code, count(*) FROM incidents WHERE {where} GROUP BY 1", params))
    counts = np.array([direct.get(code, 0) for code, _, _ in rows], dtype=float)
    points = np.array([(x, y) for _, x, y in rows])
    # The band: the largest nearest-neighbour distance between centroids, rounded up to a metre.
    d = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(axis=2))
    np.fill_diagonal(d, np.inf)
    assert layer.band_m == np.ceil(d.min(axis=1).max())
    z = _esda(points, counts, layer.band_m)
    expected = _expected_classes(z, False, 90)
    drawn = {f["properties"]["code"]: f["properties"] for f in layer.geojson["features"]}
    assert drawn and set(drawn) == {code for (code, _, _), c in zip(rows, expected) if c != 0}
    index = {code: k for k, (code, _, _) in enumerate(rows)}
    for code, props in drawn.items():
        k = index[code]
        assert abs(props["z"] - z[k]) < 1e-6 and props["count"] == counts[k] and props["class"] == expected[k]
        assert props["name"]


@pytest.mark.shared_data
def test_period_comparison_counts_and_classes_equal_direct_counts(police):  # noqa: F811
    engine = get_engine(police)
    state = FilterState(date_from=date(2023, 3, 1), date_to=date(2023, 5, 31), hotspot="compare",
                        compare_from=date(2022, 9, 1), compare_to=date(2022, 11, 30))
    layer = queries.hotspot_map_layer(engine, state, user=ANALYST)
    assert layer.note == "Sep 2022 – Nov 2022 → Mar 2023 – May 2023"
    cells, before, z_before = _direct_grid_z(police, engine, state, queries.Period(date(2022, 9, 1), date(2022, 11, 30)))
    _, after, z_after = _direct_grid_z(police, engine, state, queries.Period(date(2023, 3, 1), date(2023, 5, 31)))
    c_before, c_after = _expected_classes(z_before, False, 90), _expected_classes(z_after, False, 90)
    drawn = {f["properties"]["cell"]: f["properties"] for f in layer.geojson["features"]}
    assert drawn and set(drawn) == {c for c, b, a in zip(cells, c_before, c_after) if b or a}
    index = {cell: k for k, cell in enumerate(cells)}
    for cell, props in drawn.items():
        k = index[cell]
        assert (props["count_before"], props["count"], props["change"]) == (before[k], after[k], after[k] - before[k])
        assert props["class_before"] == queries.HOT_LABELS[int(c_before[k])]
        assert props["class_after"] == queries.HOT_LABELS[int(c_after[k])]
        assert abs(props["z"] - z_after[k]) < 0.005 and abs(props["z_before"] - z_before[k]) < 0.005
    # Without comparison dates the earlier period is the one just before.
    default = queries.comparison_periods(engine, replace(state, compare_from=None, compare_to=None))
    assert default[0] == queries.Period(date(2022, 12, 1), date(2023, 2, 28))


@pytest.mark.shared_data
@pytest.mark.parametrize("step_months", [1, 2])
def test_emerging_hot_spots_equal_their_definition_on_direct_counts(police, step_months):  # noqa: F811
    engine = get_engine(police)
    state = FilterState(date_from=date(2022, 7, 1), date_to=date(2023, 4, 30), hotspot="emerging",
                        hotspot_step_months=step_months)
    layer = queries.hotspot_map_layer(engine, state, user=ANALYST)
    steps = queries.time_steps(queries.Period(date(2022, 7, 1), date(2023, 4, 30)), step_months)
    assert len(steps) == 10 // step_months and steps[-1][-1] == date(2023, 4, 1)
    xs, ys = queries.study_area_cells(engine, 500)
    by_step = []
    for months in steps:
        direct = _direct_cells(police, state, queries.Period(months[0], queries._month_end(months[-1])), 500)
        by_step.append([direct.get((i, j), 0) for i, j in zip(xs, ys)])
    expected = hotspots.emerging_hotspots(np.array(xs), np.array(ys), np.array(by_step, dtype=float), 500)
    drawn = {f["properties"]["cell"]: f["properties"]["class"] for f in layer.geojson["features"]}
    assert drawn == {f"{i}:{j}": c for i, j, c in zip(xs, ys, expected) if c != "none"}
    assert drawn and layer.incidents == int(np.sum(by_step))
    too_short = queries.hotspot_map_layer(engine, replace(state, date_from=date(2023, 1, 1), date_to=date(2023, 2, 28),
                                                          hotspot_step_months=2), user=ANALYST)
    assert not too_short.geojson["features"] and "at least two time steps" in too_short.note


@pytest.mark.shared_data
@pytest.mark.parametrize("hotspot", ["gi_grid", "emerging", "compare"])
def test_a_forged_range_of_centuries_holds_only_the_data_spans_months(police, hotspot):  # noqa: F811
    """A link's dates are the analyst's to choose: the layers count only the months that hold data, instead of
    a months x cells array for every month of 1900-2999 (hundreds of MB, and a Gi* per month for emerging)."""
    engine = get_engine(police)
    queries.clear_caches()
    state = FilterState(date_from=date(1900, 1, 1), date_to=date(2999, 12, 31), hotspot=hotspot)
    span = queries.data_span(engine, state)
    months, by_month = queries.study_counts_by_month(engine, state, 500, user=ANALYST)
    # From the first month of data to this month (months after the data may yet hold incidents): not 13,000.
    this_month = date.today().replace(day=1)
    assert months == queries._months_of(queries.Period(span[0], queries._month_end(max(this_month, span[1]))))
    assert by_month.shape[0] == len(months) <= (this_month.year - span[0].year + 1) * 12
    layer = queries.hotspot_map_layer(engine, state, user=ANALYST)
    assert layer.incidents == by_month.sum() > 0 or hotspot == "compare"
    if hotspot == "emerging":
        assert f"{len(months)} steps of 1 month" in layer.note


@pytest.mark.shared_data
def test_kernel_density_surface_equals_the_quartic_kernel_on_direct_counts(police):  # noqa: F811
    engine = get_engine(police)
    state = FilterState(date_from=date(2023, 1, 1), date_to=date(2023, 5, 31), hotspot="kde")
    surface = queries.hotspot_map_layer(engine, state, user=ANALYST)
    xs, ys = queries.study_area_cells(engine, 250)
    direct = _direct_cells(police, state, queries.current_period(engine, state), 250)
    counts = np.array([direct.get((i, j), 0) for i, j in zip(xs, ys)], dtype=float)
    xs, ys = np.array(xs), np.array(ys)
    rule = hotspots.silverman_bandwidth_m((xs + 0.5) * 250, (ys + 0.5) * 250, counts)
    assert surface.rule_bandwidth_m == pytest.approx(rule) and surface.bandwidth_m == pytest.approx(max(rule, 250))
    assert surface.incidents == counts.sum()
    for bandwidth in (None, 1500):
        surface = queries.hotspot_map_layer(engine, replace(state, kde_bandwidth_m=bandwidth), user=ANALYST)
        nz = counts > 0
        gx, gy, values = hotspots.quartic_kde_grid(xs[nz], ys[nz], counts[nz], 250, surface.bandwidth_m)
        lookup = dict(zip(zip(gx.tolist(), gy.tolist()), values.tolist()))
        expected = np.array([lookup.get((i, j), 0.0) for i, j in zip(xs.tolist(), ys.tolist())])
        assert np.allclose(surface.density, expected, rtol=1e-9, atol=1e-12)
        assert surface.bandwidth_m == (bandwidth or max(rule, 250))
    # A tile over central London paints cells with density; one over the sea paints none.
    boxes = queries.kde_tile_cells(engine, surface, (-20000.0, 6700000.0, 0.0, 6720000.0))
    assert boxes and all(v > 0 for *_, v in boxes)
    assert queries.kde_tile_cells(engine, surface, (1e6, 1e6, 1.1e6, 1.1e6)) == []


@pytest.mark.shared_data
def test_a_picked_hotspot_cell_filters_every_panel_to_its_incidents(police):  # noqa: F811
    engine = get_engine(police)
    layer = queries.hotspot_map_layer(engine, FilterState(hotspot="gi_grid"), user=ANALYST)
    hottest = max((f for f in layer.geojson["features"] if f["properties"]["class"] > 0),
                  key=lambda f: f["properties"]["count"])
    ix, iy = (int(v) for v in hottest["properties"]["cell"].split(":"))
    for dates in ((None, None), (date(2022, 8, 15), date(2023, 1, 10))):  # grid rollup, then raw points
        state = FilterState(date_from=dates[0], date_to=dates[1], hotspot_cell=(500, ix, iy))
        period = queries.current_period(engine, state)
        where, params = _sql_conditions(state, period)
        cell = (f" AND ST_X(geom) >= {ix * 500} AND ST_X(geom) < {(ix + 1) * 500}"
                f" AND ST_Y(geom) >= {iy * 500} AND ST_Y(geom) < {(iy + 1) * 500}")
        (expected,) = query(police, f"SELECT count(*) FROM incidents WHERE {where}{cell}", params)[0]
        head = queries.headline(engine, state, user=ANALYST)
        assert head.total == expected > 0, dates
        assert head.source == ("rollup_grid_month" if dates[0] is None else "incidents")
        by_category = dict(query(police, f"SELECT category_id, count(*) FROM incidents WHERE {where}{cell} "
                                         "GROUP BY 1", params))
        assert {c.category_id: c.incidents for c in queries.category_counts(engine, state, user=ANALYST)} == by_category
        assert sum(r.incidents for r in queries.top_areas(engine, state, user=ANALYST)) == expected
        if dates[0] is None:
            assert expected == hottest["properties"]["count"]
