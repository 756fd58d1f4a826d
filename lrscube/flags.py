"""DQ bit names and values, taken from stdatamodels so they are never retyped here."""

from __future__ import annotations

from stdatamodels.jwst.datamodels import dqflags

#: name -> value for every pixel DQ bit (GOOD excluded), e.g. PIXEL["HOT"] == 2048
PIXEL: dict[str, int] = {k: int(v) for k, v in dqflags.pixel.items() if v}

DO_NOT_USE = PIXEL["DO_NOT_USE"]
REFERENCE_PIXEL = PIXEL["REFERENCE_PIXEL"]
JUMP_DET = PIXEL["JUMP_DET"]
NON_SCIENCE = PIXEL["NON_SCIENCE"]

#: Defect classes lrscube can assign, each the name of a stdatamodels DQ bit.
DEFECT_CLASSES = ("HOT", "WARM", "DEAD", "LOW_QE", "TELEGRAPH", "OTHER_BAD_PIXEL")


def value(name: str) -> int:
    """DQ value of a bit name; raises ValueError naming the valid names."""
    try:
        return PIXEL[name]
    except KeyError:
        raise ValueError(f"unknown DQ flag {name!r}; known: {', '.join(PIXEL)}") from None


def names(bits: int) -> list[str]:
    """Names of the bits set in ``bits``, lowest first."""
    bits = int(bits)
    return [n for n, v in PIXEL.items() if bits & v]
