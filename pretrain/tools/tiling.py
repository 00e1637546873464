"""Tile positions over a large scene.

Tiles are ``tile`` px squares placed every ``stride`` px (stride = tile - overlap) from the
top-left corner. When the last regular tile does not reach the border, one more tile is added
aligned to the border (its overlap with the previous one is larger than requested), so every
pixel of a scene at least ``tile`` px wide is covered and no tile is padded. A scene smaller
than one tile along either axis yields no tiles (reported as "too small").
"""
from __future__ import annotations


def axis_positions(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets along one axis; the last one is ``length - tile`` when the grid falls short."""
    if tile <= 0 or stride <= 0:
        raise ValueError(f"tile ({tile}) and stride ({stride}) must be positive")
    if length < tile:
        return []
    positions = list(range(0, length - tile + 1, stride))
    if positions[-1] + tile < length:  # the border-aligned tile
        positions.append(length - tile)
    return positions


def tile_grid(height: int, width: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """(y, x) of every tile, row-major."""
    return [(y, x) for y in axis_positions(height, tile, stride) for x in axis_positions(width, tile, stride)]
