"""Density tiles and legend classes: tile maths, PNG output, and class breaks, without a database."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from safestats.classify import class_breaks, nice_round
from safestats.tilerender import (BLANK_TILE, TILE_SIZE, cell_size_for_zoom, render_density_tile,
                                  tile_bounds_3857)


def _decode_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * 4)
    return raw[:, 1:].reshape(height, width, 4)


def test_tile_bounds_cover_the_world_and_refuse_impossible_tiles():
    assert tile_bounds_3857(0, 0, 0) == pytest.approx((-20037508.34, -20037508.34, 20037508.34, 20037508.34))
    xmin, ymin, xmax, ymax = tile_bounds_3857(10, 511, 340)  # central London
    assert xmin < -10000 < xmax and 6_670_000 < ymin < ymax < 6_750_000
    for bad in ((10, 1024, 0), (10, 0, -1), (23, 0, 0)):
        with pytest.raises(ValueError):
            tile_bounds_3857(*bad)


def test_cells_are_at_least_a_few_pixels_wide_and_multiples_of_250_m():
    sizes = [cell_size_for_zoom(z) for z in range(8, 19)]
    assert sizes == sorted(sizes, reverse=True) and all(s % 250 == 0 for s in sizes)
    assert cell_size_for_zoom(14) == 250 and cell_size_for_zoom(10) >= 1000


def test_a_dense_cell_is_painted_darker_than_a_sparse_one_where_it_lies():
    bounds = (0.0, 0.0, 2560.0, 2560.0)  # 10 m per pixel
    cells = [(0.0, 2310.0, 250.0, 2560.0, 1), (1000.0, 1000.0, 1250.0, 1250.0, 100)]
    image = _decode_png(render_density_tile(bounds, cells, scale_max=100))
    assert image.shape == (TILE_SIZE, TILE_SIZE, 4)
    sparse, dense, empty = image[5, 5], image[140, 110], image[250, 250]
    assert empty[3] == 0 and sparse[3] > 0 and dense[3] > sparse[3]
    assert dense[1] < sparse[1], "darker (less green) for the denser cell"
    assert (_decode_png(BLANK_TILE)[..., 3] == 0).all()


def test_class_breaks_quantile_and_jenks():
    values = [1] * 50 + [10] * 30 + [100] * 15 + [1000] * 5
    assert class_breaks(values, 5, "quantile")[0] == 1
    jenks = class_breaks(values, 4, "jenks")
    assert jenks == [1, 10, 100, 1000], "natural breaks find the four clusters"
    assert class_breaks([], 5) == [] and class_breaks([3, 3, 3], 5, "jenks") == [3]
    assert nice_round(1234) == 1200 and nice_round(0.04567) == 0.046
    with pytest.raises(ValueError):
        class_breaks(values, 5, "equal")


def test_the_same_values_are_classified_once():
    """Every analyst viewing the same map asks for its legend: the breaks of the same values (in any order)
    are computed once, and each caller gets its own list."""
    from safestats import classify

    values = list(np.random.default_rng(3).gamma(2.0, 30.0, 4835))
    first = class_breaks(values, 5, "jenks")
    before = classify._breaks_of_sorted.cache_info()
    again = class_breaks(list(reversed(values)), 5, "jenks")
    after = classify._breaks_of_sorted.cache_info()
    assert again == first and again is not first
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)
    again.append(0)     # a caller's list is its own
    assert class_breaks(values, 5, "jenks") == first
