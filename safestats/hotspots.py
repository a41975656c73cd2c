"""Hotspot statistics: Getis-Ord Gi*, its significance classes (with an optional false-discovery-rate
correction), emerging hot spots over time steps, period comparison, and a quartic kernel density surface.

The statistics work on counts in areas with a point each (grid cell centres or LSOA centroids, British
National Grid metres) and a fixed distance band: each area's neighbours are the areas whose point lies
within the band, the area itself included (the "star" in Gi*). Gi* is computed exactly as PySAL's
``esda.G_Local(y, w, transform="B", star=True)`` does (binary weights; analytical z-scores), which the
tests check to 1e-6. For a regular grid the neighbour sums are shifts of a dense lattice (no distance
matrix at all); for irregular areas the distance matrix is built in chunks. Everything here is plain
numpy on numbers the query layer has already aggregated in PostGIS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Two-sided normal critical values: |z| above these is significant at 90, 95 and 99 per cent.
CONFIDENCE_Z = ((99, 2.5758293035489004), (95, 1.959963984540054), (90, 1.6448536269514722))
CONFIDENCE_ALPHA = ((99, 0.01), (95, 0.05), (90, 0.10))


def normal_two_sided_p(z: np.ndarray) -> np.ndarray:
    """The two-sided p-value of each z-score under the standard normal (as ArcGIS reports it; esda's p_norm is
    one-sided, half of this). The 90/95/99 classes use the same two-sided test."""
    return np.array([math.erfc(abs(v) / math.sqrt(2)) for v in np.ravel(z)]).reshape(np.shape(z))


def neighbour_sums_points(points: np.ndarray, values: np.ndarray, band_m: float,
                          chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(sum of values within the band, number of points within the band) for each point, self included."""
    points = np.asarray(points, dtype=float)
    values = np.asarray(values, dtype=float)
    sums = np.empty(len(points))
    counts = np.empty(len(points))
    band2 = band_m * band_m
    for start in range(0, len(points), chunk):
        block = points[start:start + chunk]
        d2 = ((block[:, None, :] - points[None, :, :]) ** 2).sum(axis=2)
        within = d2 <= band2
        sums[start:start + chunk] = within @ values
        counts[start:start + chunk] = within.sum(axis=1)
    return sums, counts


def neighbour_sums_grid(ix: np.ndarray, iy: np.ndarray, values: np.ndarray, cell_m: float,
                        band_m: float) -> tuple[np.ndarray, np.ndarray]:
    """The same sums for cells of a regular grid (integer cell indices), by shifting a dense lattice.
    ``values`` is one count per cell, or a 2-D array of several time steps' counts (steps x cells): every
    step is shifted at once."""
    ix, iy = np.asarray(ix, dtype=int), np.asarray(iy, dtype=int)
    values = np.asarray(values, dtype=float)
    steps = values.reshape(-1, values.shape[-1])
    x0, y0 = ix.min(), iy.min()
    r = int(band_m // cell_m)
    shape = (ix.max() - x0 + 1 + 2 * r, iy.max() - y0 + 1 + 2 * r)
    value_grid = np.zeros((len(steps),) + shape)
    member_grid = np.zeros(shape)
    gx, gy = ix - x0 + r, iy - y0 + r
    value_grid[:, gx, gy] = steps
    member_grid[gx, gy] = 1.0
    sums = np.zeros(steps.shape)
    counts = np.zeros(values.shape[-1])
    for dx in range(-r, r + 1):
        for dy in range(-r, r + 1):
            if (dx * cell_m) ** 2 + (dy * cell_m) ** 2 <= band_m * band_m + 1e-9:
                sums += value_grid[:, gx + dx, gy + dy]
                counts += member_grid[gx + dx, gy + dy]
    return sums.reshape(values.shape), counts


def gi_star_from_sums(values: np.ndarray, neighbour_sum: np.ndarray, cardinality: np.ndarray) -> np.ndarray:
    """Gi* z-scores from each area's neighbour sum and neighbour count (binary weights, self included).
    ``values`` and ``neighbour_sum`` may be 2-D (steps x areas): each step is its own Gi*."""
    y = np.asarray(values, dtype=float)
    n = y.shape[-1]
    if n < 2:
        return np.zeros(y.shape)
    total = y.sum(axis=-1, keepdims=True)
    mean = total / n
    variance = (y * y).sum(axis=-1, keepdims=True) / n - mean * mean
    usable = (total > 0) & (variance > 0)  # an empty or uniform step: nothing is hot or cold
    total, mean, variance = (np.where(usable, v, 1.0) for v in (total, mean, variance))
    statistic = neighbour_sum / total
    expected = cardinality / n
    expected_variance = cardinality * (n - cardinality) / (n - 1) / n ** 2 * variance / mean ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (statistic - expected) / np.sqrt(expected_variance)
    # An area whose band holds every area has no variance: it is neither hot nor cold.
    return np.where(usable & (expected_variance > 0), z, 0.0)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """False-discovery-rate adjusted p-values (Benjamini-Hochberg step-up)."""
    p = np.asarray(p, dtype=float)
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def classify(z: np.ndarray, fdr: bool = False) -> np.ndarray:
    """Per area: +99/+95/+90 (hot spot at that confidence), -99/-95/-90 (cold spot) or 0 (not significant)."""
    z = np.asarray(z, dtype=float)
    classes = np.zeros(len(z), dtype=int)
    if fdr:
        p = benjamini_hochberg(normal_two_sided_p(z))
        for confidence, alpha in reversed(CONFIDENCE_ALPHA):  # 90 first, overwritten by 95, then 99
            classes = np.where(p <= alpha, np.sign(z).astype(int) * confidence, classes)
    else:
        for confidence, critical in reversed(CONFIDENCE_Z):
            classes = np.where(np.abs(z) >= critical, np.sign(z).astype(int) * confidence, classes)
    return classes


def default_band_m(cell_m: float) -> float:
    """The fixed distance band: the cell and its queen neighbours (diagonals included), about 1.5 cells."""
    return cell_m * 1.5


@dataclass(frozen=True)
class GridHotspots:
    cell_m: int
    band_m: float
    ix: np.ndarray
    iy: np.ndarray
    counts: np.ndarray
    z: np.ndarray
    classes: np.ndarray


def grid_gi_star_steps(ix, iy, counts, cell_m: int, band_m: float | None = None) -> np.ndarray:
    """Gi* z-scores of several time steps at once: ``counts`` is steps x cells; returns steps x cells."""
    band = default_band_m(cell_m) if band_m is None else band_m
    sums, cardinality = neighbour_sums_grid(ix, iy, counts, cell_m, band)
    return gi_star_from_sums(counts, sums, cardinality)


def grid_gi_star(ix, iy, counts, cell_m: int, band_m: float | None = None, fdr: bool = False) -> GridHotspots:
    """Gi* on grid cells: ``ix, iy`` every cell of the study area (zeros included), ``counts`` per cell."""
    band = default_band_m(cell_m) if band_m is None else band_m
    counts = np.asarray(counts, dtype=float)
    sums, cardinality = neighbour_sums_grid(ix, iy, counts, cell_m, band)
    z = gi_star_from_sums(counts, sums, cardinality)
    return GridHotspots(cell_m, band, np.asarray(ix), np.asarray(iy), counts, z, classify(z, fdr))


# ---- emerging hot spots and period comparison ------------------------------------------------------

def mann_kendall_z(series: np.ndarray) -> float:
    """Mann-Kendall trend test statistic (normal approximation, no tie correction) of one time series."""
    x = np.asarray(series, dtype=float)
    n = len(x)
    if n < 3:
        return 0.0
    s = sum(np.sign(x[j] - x[i]) for i in range(n - 1) for j in range(i + 1, n))
    var = n * (n - 1) * (2 * n + 5) / 18
    if s > 0:
        return (s - 1) / math.sqrt(var)
    if s < 0:
        return (s + 1) / math.sqrt(var)
    return 0.0


def mann_kendall_z_columns(series: np.ndarray) -> np.ndarray:
    """``mann_kendall_z`` of every column of ``series`` (steps x cells) at once."""
    x = np.asarray(series, dtype=float)
    n = x.shape[0]
    if n < 3:
        return np.zeros(x.shape[1] if x.ndim > 1 else 0)
    i, j = np.triu_indices(n, k=1)
    s = np.sign(x[j] - x[i]).sum(axis=0)
    sd = math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    return np.where(s > 0, (s - 1) / sd, np.where(s < 0, (s + 1) / sd, 0.0))


EMERGING_CATEGORIES = ("new", "consecutive", "intensifying", "persistent", "diminishing", "sporadic",
                       "historical", "none")


def emerging_category(hot: np.ndarray, z_series: np.ndarray, trend: float | None = None) -> str:
    """ESRI-style emerging hot spot category of one cell from its per-step hot flags and Gi* z-scores.

    new: hot in the final step only; consecutive: a single run of hot steps ending now (not most steps);
    intensifying / persistent / diminishing: hot in at least 90% of steps with a rising / no / falling trend
    in z (Mann-Kendall at 90%); sporadic: hot now, on and off before; historical: hot in most steps but not
    now; none: never hot. ``trend``: the Mann-Kendall z of ``z_series`` when already computed.
    """
    hot = np.asarray(hot, dtype=bool)
    steps = len(hot)
    if not hot.any():
        return "none"
    share = hot.mean()
    trend = mann_kendall_z(z_series) if trend is None else trend
    if share >= 0.9:
        if trend >= 1.645:
            return "intensifying"
        if trend <= -1.645:
            return "diminishing"
        return "persistent"
    if not hot[-1]:
        return "historical" if share >= 0.9 * (steps - 1) / steps else "sporadic"
    if hot[-1] and hot[:-1].sum() == 0:
        return "new"
    run = 0
    for flag in hot[::-1]:
        if not flag:
            break
        run += 1
    if run == hot.sum():
        return "consecutive"
    return "sporadic"


def emerging_hotspots(ix, iy, counts_by_step: np.ndarray, cell_m: int, band_m: float | None = None,
                      confidence: int = 90) -> list[str]:
    """Per cell, its emerging hot spot category across time steps (``counts_by_step``: steps x cells)."""
    critical = dict(CONFIDENCE_Z)[confidence]
    z_steps = np.array([grid_gi_star(ix, iy, step, cell_m, band_m).z for step in counts_by_step])
    hot = z_steps >= critical
    return [emerging_category(hot[:, i], z_steps[:, i]) for i in range(z_steps.shape[1])]


def compare_periods(ix, iy, before, after, cell_m: int, band_m: float | None = None,
                    fdr: bool = False) -> dict[str, np.ndarray]:
    """Change in counts and in Gi* class per cell between two periods."""
    first = grid_gi_star(ix, iy, before, cell_m, band_m, fdr)
    second = grid_gi_star(ix, iy, after, cell_m, band_m, fdr)
    return {"count_change": second.counts - first.counts, "class_before": first.classes,
            "class_after": second.classes, "became_hot": (first.classes <= 0) & (second.classes > 0),
            "stopped_being_hot": (first.classes > 0) & (second.classes <= 0)}


# ---- kernel density ------------------------------------------------------------------------------------

def silverman_bandwidth_m(xs: np.ndarray, ys: np.ndarray, weights: np.ndarray) -> float:
    """The standard rule of thumb for 2-D point data (as ArcGIS Kernel Density uses):
    0.9 * min(SD, sqrt(1/ln 2) * Dm) * n^-0.2, with SD the standard distance and Dm the median distance
    from the weighted mean centre."""
    w = np.asarray(weights, dtype=float)
    n = w.sum()
    if n < 2:
        return 0.0
    cx, cy = (w * xs).sum() / n, (w * ys).sum() / n
    d2 = (xs - cx) ** 2 + (ys - cy) ** 2
    standard_distance = math.sqrt((w * d2).sum() / n)
    order = np.argsort(d2)
    cumulative = np.cumsum(w[order])
    median_distance = math.sqrt(d2[order][np.searchsorted(cumulative, n / 2)])
    return 0.9 * min(standard_distance, math.sqrt(1 / math.log(2)) * median_distance) * n ** -0.2


def quartic_kde_grid(ix, iy, counts, cell_m: int, bandwidth_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quartic (biweight) kernel density of counted grid cells, evaluated on the same grid, per km².

    Returns (ix, iy, density) for every cell within the bandwidth of a non-empty cell."""
    ix, iy, counts = np.asarray(ix, dtype=int), np.asarray(iy, dtype=int), np.asarray(counts, dtype=float)
    r = max(1, int(math.ceil(bandwidth_m / cell_m)))
    x0, y0 = ix.min() - r, iy.min() - r
    shape = (ix.max() - x0 + 1 + r, iy.max() - y0 + 1 + r)
    source = np.zeros(shape)
    np.add.at(source, (ix - x0, iy - y0), counts)
    density = np.zeros(shape)
    norm = 3.0 / (math.pi * bandwidth_m ** 2)  # the quartic kernel integrates to 1 over the disc
    for dx in range(-r, r + 1):
        for dy in range(-r, r + 1):
            d2 = (dx * cell_m) ** 2 + (dy * cell_m) ** 2
            if d2 < bandwidth_m ** 2:
                weight = norm * (1 - d2 / bandwidth_m ** 2) ** 2
                density += weight * np.roll(np.roll(source, dx, axis=0), dy, axis=1)
    gx, gy = np.nonzero(density > 0)
    return gx + x0, gy + y0, density[gx, gy] * 1e6  # per km²
