"""Rendering density tiles: Web Mercator tile maths and a small PNG writer for counted grid cells.

The map's density layer is an ordinary Leaflet tile layer whose tiles the server draws from the grid
rollup (dash-leaflet has no vector-tile layer, and raw points for central London at zoom 10 would be tens of
megabytes). A tile is 256 x 256 RGBA: each cell's Web Mercator box is filled with the colour of its count's
class on a scale shared by all tiles of the same filter, so tiles join seamlessly. PNG encoding is zlib and
three chunks; no imaging library needed.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

TILE_SIZE = 256
WEB_MERCATOR_HALF = 20037508.342789244
# ColorBrewer YlOrRd, five classes (colour-blind safe), with rising opacity so sparse cells stay light.
DENSITY_COLOURS = ((255, 255, 178, 150), (254, 204, 92, 175), (253, 141, 60, 200), (240, 59, 32, 215),
                   (189, 0, 38, 230))
# Share of the scale maximum (the 98th percentile cell) where each class starts.
DENSITY_CLASS_STARTS = (0.0, 0.1, 0.25, 0.5, 0.8)


def tile_bounds_3857(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of an XYZ tile in Web Mercator metres."""
    if not (0 <= z <= 22 and 0 <= x < 2 ** z and 0 <= y < 2 ** z):
        raise ValueError(f"no such tile {z}/{x}/{y}")
    size = 2 * WEB_MERCATOR_HALF / 2 ** z
    xmin = -WEB_MERCATOR_HALF + x * size
    ymax = WEB_MERCATOR_HALF - y * size
    return xmin, ymax - size, xmin + size, ymax


def cell_size_for_zoom(z: int) -> int:
    """Grid cell size (metres, a multiple of the 250 m rollup) that is at least ~6 pixels wide at zoom z."""
    metres_per_pixel = 2 * WEB_MERCATOR_HALF / TILE_SIZE / 2 ** z * 0.62  # ground metres near 51.5 N
    cell = 250
    while cell < 6 * metres_per_pixel:
        cell *= 2
    return cell


def render_density_tile(bounds: tuple[float, float, float, float], cells, scale_max: int) -> bytes:
    """A PNG of ``cells`` ((xmin, ymin, xmax, ymax in 3857, count), ...) clipped to the tile ``bounds``."""
    image = np.zeros((TILE_SIZE, TILE_SIZE, 4), dtype=np.uint8)
    if cells and scale_max > 0:
        arr = np.asarray(cells, dtype=float)
        txmin, tymin, txmax, tymax = bounds
        res = (txmax - txmin) / TILE_SIZE
        cols0 = np.clip(np.floor((arr[:, 0] - txmin) / res), 0, TILE_SIZE).astype(int)
        cols1 = np.clip(np.ceil((arr[:, 2] - txmin) / res), 0, TILE_SIZE).astype(int)
        rows0 = np.clip(np.floor((tymax - arr[:, 3]) / res), 0, TILE_SIZE).astype(int)
        rows1 = np.clip(np.ceil((tymax - arr[:, 1]) / res), 0, TILE_SIZE).astype(int)
        share = arr[:, 4] / scale_max
        classes = np.searchsorted(np.asarray(DENSITY_CLASS_STARTS), share, side="right") - 1
        palette = np.asarray(DENSITY_COLOURS, dtype=np.uint8)
        # Paint low classes first so a dense cell is never hidden under a sparse neighbour's overlap.
        for i in np.argsort(classes, kind="stable"):
            if cols1[i] > cols0[i] and rows1[i] > rows0[i]:
                image[rows0[i]:rows1[i], cols0[i]:cols1[i]] = palette[max(0, classes[i])]
    return encode_png(image)


def encode_png(rgba: np.ndarray) -> bytes:
    height, width = rgba.shape[:2]
    raw = b"".join(b"\x00" + rgba[row].tobytes() for row in range(height))  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


BLANK_TILE = encode_png(np.zeros((TILE_SIZE, TILE_SIZE, 4), dtype=np.uint8))
