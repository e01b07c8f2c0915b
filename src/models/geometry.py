"""Spatial-size arithmetic for models whose fully connected layers depend on the image size.

A model describes its feature extractor as a list of ``(kernel, stride, padding, ceil_mode)`` windows;
from it we get the final feature-map side for an input size (to size the first FC layer) and the
smallest input that still leaves a 1x1 map (to refuse a too-small image before torch does).
"""

from collections.abc import Sequence

Window = tuple[int, int, int, bool]  # kernel, stride, padding, ceil_mode


def window_output(size: int, kernel: int, stride: int = 1, padding: int = 0, ceil_mode: bool = False) -> int:
    """Output side of one conv/pool window, with torch's rule for ``ceil_mode`` pooling."""
    span = size + 2 * padding - kernel
    if span < 0:
        return 0
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:  # the last window must start inside the input
        out -= 1
    return out


def feature_size(size: int, windows: Sequence[Window]) -> int:
    """Side of the feature map after all ``windows``; 0 when the map collapses on the way."""
    for kernel, stride, padding, ceil_mode in windows:
        size = window_output(size, kernel, stride, padding, ceil_mode)
        if size < 1:
            return 0
    return size


def minimum_input_size(windows: Sequence[Window], limit: int = 4096) -> int:
    """The smallest input side that leaves at least a 1x1 feature map."""
    for size in range(1, limit):
        if feature_size(size, windows) >= 1:
            return size
    raise ValueError("no input size up to the limit fits these windows")
