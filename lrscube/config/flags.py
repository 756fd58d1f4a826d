"""DQ bit names and values, taken from stdatamodels so they are never retyped here.

stdatamodels' datamodels take about a second to import, so the table is read from them when a
flag is first asked for (``flags.PIXEL``, ``flags.DO_NOT_USE``, :func:`value`, ...), not when
lrscube is imported.
"""

from __future__ import annotations

import functools

#: Defect classes lrscube can assign, each the name of a stdatamodels DQ bit.
DEFECT_CLASSES = ("HOT", "WARM", "DEAD", "LOW_QE", "TELEGRAPH", "OTHER_BAD_PIXEL")

#: module attributes read from the table on first use: name -> bit name (PIXEL is the table)
_BITS = {"DO_NOT_USE": "DO_NOT_USE", "REFERENCE_PIXEL": "REFERENCE_PIXEL", "JUMP_DET": "JUMP_DET",
         "NON_SCIENCE": "NON_SCIENCE"}


@functools.cache
def pixel_table() -> dict[str, int]:
    """name -> value for every pixel DQ bit (GOOD excluded), e.g. ``pixel_table()["HOT"] == 2048``."""
    from stdatamodels.jwst.datamodels import dqflags

    return {k: int(v) for k, v in dqflags.pixel.items() if v}


def __getattr__(name: str):
    # PIXEL (the table) and the bits in _BITS, e.g. flags.DO_NOT_USE == 1
    if name == "PIXEL":
        return pixel_table()
    if name in _BITS:
        return pixel_table()[_BITS[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def value(name: str) -> int:
    """DQ value of a bit name; raises ValueError naming the valid names."""
    table = pixel_table()
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown DQ flag {name!r}; known: {', '.join(table)}") from None


def names(bits: int) -> list[str]:
    """Names of the bits set in ``bits``, lowest first."""
    bits = int(bits)
    return [n for n, v in pixel_table().items() if bits & v]
