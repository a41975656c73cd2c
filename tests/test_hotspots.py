"""Hotspot statistics: Gi* equal to PySAL's esda.G_Local(star=True) to 1e-6, classes, FDR, emerging hot
spots and kernel density, on synthetic counts with known structure."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from safestats import hotspots


def _esda_z(points, counts, band):
    import esda  # a test dependency (pyproject's [test] extra): never skipped, so the comparison always runs
    from libpysal.weights import DistanceBand

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # libpysal warns about islands and disconnected components
        w = DistanceBand(points, threshold=band, binary=True, silence_warnings=True)
        return esda.G_Local(counts, w, transform="B", star=True, permutations=0).Zs


def _grid_with_a_hotspot(rng, nx=30, ny=25):
    ix, iy = np.meshgrid(np.arange(100, 100 + nx), np.arange(500, 500 + ny), indexing="ij")
    ix, iy = ix.ravel(), iy.ravel()
    counts = rng.poisson(2.0, size=ix.size).astype(float)
    hot = (np.abs(ix - 110) <= 2) & (np.abs(iy - 510) <= 2)
    counts[hot] += 25
    counts[rng.random(ix.size) < 0.3] = 0  # empty cells are part of the study area
    return ix, iy, counts, hot


@pytest.mark.parametrize("cell_m, band_factor", [(250, 1.5), (500, 1.5), (250, 2.9)])
def test_grid_gi_star_equals_esda(cell_m, band_factor):
    rng = np.random.default_rng(7)
    ix, iy, counts, _ = _grid_with_a_hotspot(rng)
    band = cell_m * band_factor
    ours = hotspots.grid_gi_star(ix, iy, counts, cell_m, band).z
    points = np.column_stack([(ix + 0.5) * cell_m, (iy + 0.5) * cell_m])
    assert np.max(np.abs(ours - _esda_z(points, counts, band))) < 1e-6


def test_irregular_areas_gi_star_equals_esda():
    rng = np.random.default_rng(11)
    points = rng.uniform(0, 20_000, size=(600, 2))
    counts = rng.poisson(3, size=600).astype(float)
    counts[(points[:, 0] < 4000) & (points[:, 1] < 4000)] += 12
    sums, cardinality = hotspots.neighbour_sums_points(points, counts, 1500.0, chunk=97)
    ours = hotspots.gi_star_from_sums(counts, sums, cardinality)
    assert np.max(np.abs(ours - _esda_z(points, counts, 1500.0))) < 1e-6


def test_the_planted_hotspot_is_hot_at_99_and_fdr_is_stricter():
    rng = np.random.default_rng(3)
    ix, iy, counts, hot = _grid_with_a_hotspot(rng)
    result = hotspots.grid_gi_star(ix, iy, counts, 250)
    assert (result.classes[hot] == 99).mean() > 0.8
    assert (result.classes[~hot] >= 95).mean() < 0.1
    fdr = hotspots.classify(result.z, fdr=True)
    assert (np.abs(fdr) > 0).sum() <= (np.abs(result.classes) > 0).sum()
    assert set(np.unique(result.classes)) <= {-99, -95, -90, 0, 90, 95, 99}


def test_benjamini_hochberg_matches_a_worked_example():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.20])
    expected = np.array([0.025, 0.05, 0.05, 0.025, 0.20])
    assert np.allclose(hotspots.benjamini_hochberg(p), expected)


def test_emerging_categories():
    steps = 10
    z = np.linspace(1, 2, steps)
    assert hotspots.emerging_category(np.r_[np.zeros(steps - 1, bool), True], z) == "new"
    assert hotspots.emerging_category(np.ones(steps, bool), np.linspace(2, 6, steps)) == "intensifying"
    assert hotspots.emerging_category(np.ones(steps, bool), np.full(steps, 3.0)) == "persistent"
    assert hotspots.emerging_category(np.ones(steps, bool), np.linspace(6, 2, steps)) == "diminishing"
    assert hotspots.emerging_category(np.r_[np.zeros(6, bool), np.ones(4, bool)], z) == "consecutive"
    assert hotspots.emerging_category(np.array([1, 0, 1, 0, 0, 1, 0, 1, 0, 1], bool), z) == "sporadic"
    assert hotspots.emerging_category(np.zeros(steps, bool), z) == "none"


def test_kernel_density_integrates_to_the_count_and_peaks_at_the_cluster():
    ix = np.array([0, 40, 41])
    iy = np.array([0, 40, 40])
    counts = np.array([10.0, 50.0, 50.0])
    gx, gy, density = hotspots.quartic_kde_grid(ix, iy, counts, 250, 1000.0)
    assert density.sum() * 0.25 * 0.25 == pytest.approx(110, rel=0.05)  # per km² x cell area
    peak = np.argmax(density)
    assert (gx[peak], gy[peak]) in ((40, 40), (41, 40))
    bandwidth = hotspots.silverman_bandwidth_m(np.array([0.0, 1000, 2000, 3000]), np.zeros(4), np.ones(4))
    assert 0 < bandwidth < 3000


def test_mann_kendall_of_many_columns_equals_one_at_a_time():
    rng = np.random.default_rng(5)
    series = rng.normal(size=(12, 40)).cumsum(axis=0)
    series[:, 0] = 1.0  # no trend at all
    expected = [hotspots.mann_kendall_z(series[:, k]) for k in range(series.shape[1])]
    assert np.allclose(hotspots.mann_kendall_z_columns(series), expected)
    assert hotspots.mann_kendall_z_columns(series[:2]).tolist() == [0.0] * 40
