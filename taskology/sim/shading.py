"""Procedural textures and lighting: (material, hit point, normal, base colour, shadow) -> sRGB.

Textures are functions of the hit point in a frame attached to the surface (world frame for static
geometry, object frame for moving objects), so a surface looks the same from every view and moves
with its object: photometric consistency between frames holds up to lighting of moved objects.
Lighting is view-independent (Lambert + ambient, optional cast shadow), and the sky is a gradient
with soft clouds that depends only on the ray direction.

Two implementations with identical formulas: :func:`shade_reference` (vectorised NumPy, the
reference) and :func:`shade` (Numba, ``parallel=True``). Tests compare them.

Example:
    >>> import numpy as np
    >>> rgb = shade_reference(np.array([0], np.uint8), np.full((1, 3), 0.5, np.float32),
    ...                       np.zeros((1, 3)), np.array([[0, 0, 1.0]]), np.ones(1, bool), np.array([0, 0, 1.0]))
    >>> rgb.shape, rgb.dtype
    ((1, 3), dtype('uint8'))
"""
from __future__ import annotations

import numba
import numpy as np

from taskology.sim import materials as mat

AMBIENT = np.array([0.42, 0.44, 0.5], np.float32)   # sky light, linear multiplier
SUN = np.array([0.82, 0.78, 0.7], np.float32)       # direct light at normal incidence
HORIZON = np.array([0.80, 0.86, 0.93], np.float32)
ZENITH = np.array([0.32, 0.52, 0.85], np.float32)
WINDOW = np.array([0.16, 0.2, 0.26], np.float32)

_M1, _M2, _M3 = np.uint32(0x9E3779B1), np.uint32(0x85EBCA77), np.uint32(0xC2B2AE3D)


# ---------------------------------------------------------------------------------- NumPy reference
def _hash_np(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> np.ndarray:
    """Integer lattice hash -> float64 in [0, 1). Inputs are integer-valued arrays."""
    with np.errstate(over="ignore"):
        h = (ix.astype(np.int64).astype(np.uint32) * _M1) ^ (iy.astype(np.int64).astype(np.uint32) * _M2) \
            ^ (iz.astype(np.int64).astype(np.uint32) * _M3)
        h ^= h >> np.uint32(15)
        h *= _M2
        h ^= h >> np.uint32(13)
    return (h >> np.uint32(8)).astype(np.float64) / float(1 << 24)


def _noise_np(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Trilinear value noise with smoothstep weights, values in [0, 1)."""
    fx, fy, fz = np.floor(x), np.floor(y), np.floor(z)
    tx, ty, tz = x - fx, y - fy, z - fz
    tx, ty, tz = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty), tz * tz * (3 - 2 * tz)
    out = np.zeros_like(x)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = (tx if dx else 1 - tx) * (ty if dy else 1 - ty) * (tz if dz else 1 - tz)
                out += w * _hash_np(fx + dx, fy + dy, fz + dz)
    return out


def _frac(v: np.ndarray) -> np.ndarray:
    return v - np.floor(v)


def _fade_np(frequency: float, footprint: np.ndarray) -> np.ndarray:
    """Weight of a texture feature of ``frequency`` (cycles / metre) for a pixel footprint (metres):
    1 well below Nyquist, 0 above it (mip-map-like filtering against aliasing)."""
    return np.clip(2.0 - 4.0 * frequency * footprint, 0.0, 1.0)


def shade_reference(material: np.ndarray, colour: np.ndarray, point: np.ndarray, normal: np.ndarray,
                    lit: np.ndarray, sun_dir: np.ndarray, footprint: np.ndarray | None = None) -> np.ndarray:
    """Shade N hits.

    Args:
        material: (N,) uint8 material ids.
        colour: (N, 3) float32 base colour in [0, 1].
        point: (N, 3) float64 texture-frame hit point, metres.
        normal: (N, 3) float64 unit normal (world frame), towards the viewer.
        lit: (N,) bool, False where the sun is occluded.
        sun_dir: (3,) unit vector towards the sun (world frame).
        footprint: (N,) float64 size of the pixel on the surface, metres (default 0: no filtering);
            texture detail finer than the footprint fades to its mean so images do not alias.

    Returns:
        (N, 3) uint8 sRGB.
    """
    x, y, z = (point[:, k].astype(np.float64) for k in range(3))
    nx, ny, nz = (normal[:, k].astype(np.float64) for k in range(3))
    fp = np.zeros(len(material)) if footprint is None else np.asarray(footprint, np.float64)
    f = np.ones(len(material))
    albedo = colour.astype(np.float64).copy()
    m = material
    sel = m == mat.ASPHALT
    f[sel] = (0.8 + 0.3 * (_noise_np(x * 0.15, y * 0.15, z * 0.15) - 0.5)
              + 0.35 * (_noise_np(x * 6, y * 6, z * 6) - 0.5) * _fade_np(6.0, fp))[sel]
    sel = m == mat.CONCRETE
    joint = ((_frac(x / 1.5) < 0.04) | (_frac(y / 1.5) < 0.04)) * _fade_np(8.0, fp)
    tile = 0.95 + 0.16 * (_hash_np(np.floor(x / 1.5), np.floor(y / 1.5), np.floor(z)) - 0.5) \
        + 0.12 * (_noise_np(x * 3, y * 3, z * 3) - 0.5) * _fade_np(3.0, fp)
    f[sel] = (tile + (0.72 - tile) * joint)[sel]
    sel = m == mat.ROAD_PAINT
    f[sel] = (0.95 + 0.1 * (_noise_np(x * 2, y * 2, z * 2) - 0.5))[sel]
    facade = (m == mat.BRICK) | (m == mat.PLASTER)
    h = np.where(np.abs(ny) > np.abs(nx), x, y)
    row = np.floor(z / 0.3)
    shifted = h / 0.6 + 0.5 * (row - 2 * np.floor(row / 2))
    mortar = ((_frac(z / 0.3) < 0.14) | (_frac(shifted) < 0.07)) * _fade_np(6.0, fp)
    brick = 0.97 + (0.82 + 0.3 * _hash_np(row, np.floor(shifted), np.zeros_like(row)) - 0.97) * _fade_np(3.0, fp)
    brick = brick + (1.3 - brick) * mortar
    plaster = 0.92 + 0.2 * (_noise_np(x * 1.5, y * 1.5, z * 1.5) - 0.5) \
        + 0.1 * (_noise_np(x * 8, y * 8, z * 8) - 0.5) * _fade_np(8.0, fp)
    f[facade] = np.where(m == mat.BRICK, brick, plaster)[facade]
    fz, fh = _frac(z / 3.2), _frac(h / 3.0)
    window = facade & (np.abs(nz) < 0.5) & (z > 2.0) & (fz > 0.3) & (fz < 0.8) & (fh > 0.22) & (fh < 0.78)
    pane = 0.75 + 0.6 * _hash_np(np.floor(z / 3.2), np.floor(h / 3.0), np.floor(nx * 2 + ny * 3))
    albedo[window] = WINDOW[None, :] * pane[window, None]
    f[window] = 1.0
    sel = m == mat.ROOF
    f[sel] = (0.8 + 0.35 * (_noise_np(x * 0.5, y * 0.5, z * 0.5) - 0.5))[sel]
    sel = m == mat.BARK
    f[sel] = (0.75 + 0.5 * (_noise_np(x * 10, y * 10, z * 1.0) - 0.5) * _fade_np(10.0, fp))[sel]
    sel = (m == mat.FOLIAGE) | (m == mat.GRASS)
    f[sel] = (0.6 + 0.6 * _noise_np(x * 2.5, y * 2.5, z * 2.5)
              + 0.4 * (_noise_np(x * 9, y * 9, z * 9) - 0.5) * _fade_np(9.0, fp))[sel]
    sel = m == mat.METAL
    f[sel] = (0.9 + 0.2 * (_noise_np(x * 5, y * 5, z * 5) - 0.5) * _fade_np(5.0, fp))[sel]
    sel = (m == mat.CAR_PAINT) | (m == mat.GLASS)
    f[sel] = (0.95 + 0.14 * (_noise_np(x * 2, y * 2, z * 2) - 0.5))[sel]
    sel = m == mat.CLOTH
    f[sel] = (0.95 + 0.3 * (_noise_np(x * 15, y * 15, z * 15) - 0.5) * _fade_np(15.0, fp))[sel]
    cos = np.maximum(0.0, nx * sun_dir[0] + ny * sun_dir[1] + nz * sun_dir[2]) * lit
    light = AMBIENT[None, :].astype(np.float64) + SUN[None, :].astype(np.float64) * cos[:, None]
    rgb = albedo * f[:, None] * light
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def sky_reference(direction: np.ndarray) -> np.ndarray:
    """Sky colour for unit world directions (N, 3): horizon-zenith gradient with soft clouds. (N, 3) uint8."""
    up = np.clip(direction[:, 2].astype(np.float64), 0.0, 1.0)
    t = np.sqrt(up)
    base = HORIZON[None, :] * (1 - t[:, None]) + ZENITH[None, :] * t[:, None]
    scale = 1.0 / np.maximum(up, 0.05)
    u, v = direction[:, 0] * scale * 1.5, direction[:, 1] * scale * 1.5
    cloud = np.clip((_noise_np(u, v, np.zeros_like(u)) * 0.65 + _noise_np(u * 3, v * 3, np.ones_like(u)) * 0.35 - 0.5)
                    * 2.5, 0.0, 1.0) * (1 - np.exp(-up * 8))
    rgb = base * (1 - cloud[:, None]) + 0.95 * cloud[:, None]
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------- Numba kernels
@numba.njit(cache=True, inline="always")
def sky_into(out: np.ndarray, i: int, dx: float, dy: float, dz: float, horizon: np.ndarray,
             zenith: np.ndarray) -> None:
    """Write ``out[i]``: the sky colour (three uint8) of one unit world direction; the per-ray body of :func:`sky`."""
    up = min(max(dz, 0.0), 1.0)
    t = np.sqrt(up)
    scale = 1.0 / max(up, 0.05)
    u, v = dx * scale * 1.5, dy * scale * 1.5
    cloud = (_noise_nb(u, v, 0.0) * 0.65 + _noise_nb(u * 3, v * 3, 1.0) * 0.35 - 0.5) * 2.5
    cloud = min(max(cloud, 0.0), 1.0) * (1 - np.exp(-up * 8))
    c0 = (horizon[0] * (1 - t) + zenith[0] * t) * (1 - cloud) + 0.95 * cloud
    c1 = (horizon[1] * (1 - t) + zenith[1] * t) * (1 - cloud) + 0.95 * cloud
    c2 = (horizon[2] * (1 - t) + zenith[2] * t) * (1 - cloud) + 0.95 * cloud
    out[i, 0] = np.uint8(min(max(c0, 0.0), 1.0) * 255.0 + 0.5)
    out[i, 1] = np.uint8(min(max(c1, 0.0), 1.0) * 255.0 + 0.5)
    out[i, 2] = np.uint8(min(max(c2, 0.0), 1.0) * 255.0 + 0.5)


@numba.njit(cache=True)
def _sky_kernel(direction, horizon, zenith, out):  # noqa: ANN001
    for i in range(direction.shape[0]):
        sky_into(out, i, direction[i, 0], direction[i, 1], direction[i, 2], horizon, zenith)


def sky(direction: np.ndarray) -> np.ndarray:
    """Numba twin of :func:`sky_reference`: (N, 3) unit world directions -> (N, 3) uint8."""
    out = np.empty((len(direction), 3), np.uint8)
    if len(direction):
        _sky_kernel(np.ascontiguousarray(direction, np.float64), HORIZON.astype(np.float64),
                    ZENITH.astype(np.float64), out)
    return out



@numba.njit(cache=True, inline="always")
def _hash_nb(ix: float, iy: float, iz: float) -> float:
    h = np.uint32(np.uint32(np.int64(ix)) * np.uint32(0x9E3779B1)) \
        ^ np.uint32(np.uint32(np.int64(iy)) * np.uint32(0x85EBCA77)) \
        ^ np.uint32(np.uint32(np.int64(iz)) * np.uint32(0xC2B2AE3D))
    h = np.uint32(h)
    h = np.uint32(h ^ (h >> np.uint32(15)))
    h = np.uint32(h * np.uint32(0x85EBCA77))
    h = np.uint32(h ^ (h >> np.uint32(13)))
    return float(h >> np.uint32(8)) / float(1 << 24)


@numba.njit(cache=True)
def _noise_nb(x: float, y: float, z: float) -> float:
    fx, fy, fz = np.floor(x), np.floor(y), np.floor(z)
    tx, ty, tz = x - fx, y - fy, z - fz
    tx, ty, tz = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty), tz * tz * (3 - 2 * tz)
    out = 0.0
    for dx in range(2):
        wx = tx if dx else 1 - tx
        for dy in range(2):
            wy = ty if dy else 1 - ty
            for dz in range(2):
                wz = tz if dz else 1 - tz
                out += wx * wy * wz * _hash_nb(fx + dx, fy + dy, fz + dz)
    return out


@numba.njit(cache=True)
def _frac_nb(v: float) -> float:
    return v - np.floor(v)


@numba.njit(cache=True)
def _fade_nb(frequency: float, footprint: float) -> float:
    return min(max(2.0 - 4.0 * frequency * footprint, 0.0), 1.0)


@numba.njit(cache=True, inline="always")
def shade_into(out: np.ndarray, i: int, m: int, r: float, g: float, b: float, x: float, y: float, z: float,
               nx: float, ny: float, nz: float, fp: float, lit: bool, sun_dir: np.ndarray, ambient: np.ndarray,
               sun: np.ndarray, window_rgb: np.ndarray) -> None:
    """Write ``out[i]`` (three uint8 sRGB) for one hit: material ``m``, base colour (r, g, b), texture-frame point
    (x, y, z), unit normal (nx, ny, nz), pixel footprint ``fp`` metres, ``lit`` False in shadow.
    The per-hit body of :func:`shade` (and of the fused layer kernels). A detail noise whose fade
    weight is 0 adds exactly 0 and is not evaluated (most distant and grazing pixels)."""
    f = 1.0
    if m == 0:  # asphalt
        f = 0.8 + 0.3 * (_noise_nb(x * 0.15, y * 0.15, z * 0.15) - 0.5) \
            + (0.35 * (_noise_nb(x * 6, y * 6, z * 6) - 0.5) * _fade_nb(6.0, fp) if _fade_nb(6.0, fp) > 0.0 else 0.0)
    elif m == 1:  # concrete
        joint = 1.0 if (_frac_nb(x / 1.5) < 0.04 or _frac_nb(y / 1.5) < 0.04) else 0.0
        tile = 0.95 + 0.16 * (_hash_nb(np.floor(x / 1.5), np.floor(y / 1.5), np.floor(z)) - 0.5) \
            + (0.12 * (_noise_nb(x * 3, y * 3, z * 3) - 0.5) * _fade_nb(3.0, fp) if _fade_nb(3.0, fp) > 0.0 else 0.0)
        f = tile + (0.72 - tile) * joint * _fade_nb(8.0, fp)
    elif m == 2:  # road paint
        f = 0.95 + 0.1 * (_noise_nb(x * 2, y * 2, z * 2) - 0.5)
    elif m == 3 or m == 4:  # facades
        h = x if abs(ny) > abs(nx) else y
        if m == 3:
            row = np.floor(z / 0.3)
            shifted = h / 0.6 + 0.5 * (row - 2 * np.floor(row / 2))
            mortar = 1.0 if (_frac_nb(z / 0.3) < 0.14 or _frac_nb(shifted) < 0.07) else 0.0
            f = 0.97 + (0.82 + 0.3 * _hash_nb(row, np.floor(shifted), 0.0) - 0.97) * _fade_nb(3.0, fp)
            f = f + (1.3 - f) * mortar * _fade_nb(6.0, fp)
        else:
            f = 0.92 + 0.2 * (_noise_nb(x * 1.5, y * 1.5, z * 1.5) - 0.5) \
                + (0.1 * (_noise_nb(x * 8, y * 8, z * 8) - 0.5) * _fade_nb(8.0, fp) if _fade_nb(8.0, fp) > 0.0 else 0.0)
        fz, fh = _frac_nb(z / 3.2), _frac_nb(h / 3.0)
        if abs(nz) < 0.5 and z > 2.0 and fz > 0.3 and fz < 0.8 and fh > 0.22 and fh < 0.78:
            pane = 0.75 + 0.6 * _hash_nb(np.floor(z / 3.2), np.floor(h / 3.0), np.floor(nx * 2 + ny * 3))
            r, g, b = window_rgb[0] * pane, window_rgb[1] * pane, window_rgb[2] * pane
            f = 1.0
    elif m == 5:  # roof
        f = 0.8 + 0.35 * (_noise_nb(x * 0.5, y * 0.5, z * 0.5) - 0.5)
    elif m == 6:  # bark
        f = 0.75 + (0.5 * (_noise_nb(x * 10, y * 10, z * 1.0) - 0.5) * _fade_nb(10.0, fp)
                    if _fade_nb(10.0, fp) > 0.0 else 0.0)
    elif m == 7 or m == 14:  # foliage, grass
        f = 0.6 + 0.6 * _noise_nb(x * 2.5, y * 2.5, z * 2.5) \
            + (0.4 * (_noise_nb(x * 9, y * 9, z * 9) - 0.5) * _fade_nb(9.0, fp) if _fade_nb(9.0, fp) > 0.0 else 0.0)
    elif m == 8:  # metal
        f = 0.9 + (0.2 * (_noise_nb(x * 5, y * 5, z * 5) - 0.5) * _fade_nb(5.0, fp) if _fade_nb(5.0, fp) > 0.0 else 0.0)
    elif m == 9 or m == 10:  # car paint, glass
        f = 0.95 + 0.14 * (_noise_nb(x * 2, y * 2, z * 2) - 0.5)
    elif m == 12:  # cloth
        f = 0.95 + (0.3 * (_noise_nb(x * 15, y * 15, z * 15) - 0.5) * _fade_nb(15.0, fp)
                    if _fade_nb(15.0, fp) > 0.0 else 0.0)
    cos = nx * sun_dir[0] + ny * sun_dir[1] + nz * sun_dir[2]
    if cos < 0.0 or not lit:
        cos = 0.0
    v0 = min(max(r * f * (ambient[0] + sun[0] * cos), 0.0), 1.0)
    v1 = min(max(g * f * (ambient[1] + sun[1] * cos), 0.0), 1.0)
    v2 = min(max(b * f * (ambient[2] + sun[2] * cos), 0.0), 1.0)
    out[i, 0] = np.uint8(v0 * 255.0 + 0.5)
    out[i, 1] = np.uint8(v1 * 255.0 + 0.5)
    out[i, 2] = np.uint8(v2 * 255.0 + 0.5)


@numba.njit(cache=True)
def _shade_kernel(material, colour, point, normal, lit, sun_dir, footprint, ambient, sun, window_rgb, out):  # noqa: ANN001
    for i in range(material.shape[0]):
        shade_into(
            out, i, material[i], float(colour[i, 0]), float(colour[i, 1]), float(colour[i, 2]), point[i, 0], point[i, 1],
            point[i, 2], normal[i, 0], normal[i, 1], normal[i, 2], footprint[i], lit[i], sun_dir, ambient, sun,
            window_rgb)


def shade(material: np.ndarray, colour: np.ndarray, point: np.ndarray, normal: np.ndarray, lit: np.ndarray,
          sun_dir: np.ndarray, footprint: np.ndarray | None = None) -> np.ndarray:
    """Numba twin of :func:`shade_reference` (same arguments, same result up to float rounding)."""
    out = np.empty((len(material), 3), np.uint8)
    fp = np.zeros(len(material)) if footprint is None else np.ascontiguousarray(footprint, np.float64)
    if len(material):
        _shade_kernel(np.ascontiguousarray(material, np.uint8), np.ascontiguousarray(colour, np.float32),
                      np.ascontiguousarray(point, np.float64), np.ascontiguousarray(normal, np.float64),
                      np.ascontiguousarray(lit, np.bool_), np.asarray(sun_dir, np.float64), fp,
                      AMBIENT.astype(np.float64), SUN.astype(np.float64), WINDOW.astype(np.float64), out)
    return out
