"""How a movie's float32 values are stored on disk: float32, float16, or uint16 with a scale.

``aligned.zarr`` is the largest file of a run (4 bytes per pixel and frame in float32).
``concatenation.dtype`` halves it:

- ``float16``: 11 significant bits, so a relative error of at most 2**-11 (0.05 %) per value;
  values beyond +-65504 cannot be stored (the writer refuses them, naming the frame);
- ``uint16-scaled``: ``value = (code - zero) * scale`` with 65535 levels spread over the
  movie's range (measured before writing), so an absolute error of at most ``scale / 2``
  per value, and 0 (pixels a session does not cover) stored exactly.

The encoding is recorded in the array's attrs (``califlow_encoding``); readers call
:meth:`MovieEncoding.decode` and always get float32. An array without the attribute is
plain float32 (stores written before the option existed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ATTR", "DTYPES", "FLOAT16_MAX", "MovieEncoding"]

#: The values of ``concatenation.dtype``.
DTYPES = ("float32", "float16", "uint16-scaled")
#: Largest finite float16 magnitude.
FLOAT16_MAX = 65504.0
_TOP = 65535  # largest uint16 code
_STORAGE = {"float32": np.float32, "float16": np.float16, "uint16-scaled": np.uint16}
#: The movie array's attribute that records its encoding.
ATTR = "califlow_encoding"


@dataclass(frozen=True)
class MovieEncoding:
    """The storage of a float32 movie.

    Attributes
    ----------
    name : {'float32', 'float16', 'uint16-scaled'}
    scale : float
        ``uint16-scaled`` only: the value of one code step (the movie's units).
    zero : int
        ``uint16-scaled`` only: the code that stores 0.
    """

    name: str = "float32"
    scale: float = 1.0
    zero: int = 0

    def __post_init__(self):
        if self.name not in DTYPES:
            raise ValueError(f"concatenation.dtype {self.name!r} is not one of {list(DTYPES)}")

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the stored array."""
        return np.dtype(_STORAGE[self.name])

    @classmethod
    def for_range(cls, name: str, lo: float, hi: float) -> MovieEncoding:
        """The encoding ``name`` for values in [lo, hi] (only ``uint16-scaled`` uses the range).

        The range is widened to hold 0, so that padded pixels stay exactly 0.
        """
        if name != "uint16-scaled":
            return cls(name)
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"uint16-scaled needs a finite range of values, got [{lo}, {hi}]")
        scale = (hi - lo) / (_TOP - 1) if hi > lo else 1.0  # one spare level for the rounding of zero
        return cls(name, float(scale), int(math.ceil(-lo / scale)))

    @classmethod
    def of(cls, array) -> MovieEncoding:
        """The encoding recorded in a Zarr array's attrs (float32 when none is)."""
        spec = dict(array.attrs).get(ATTR)
        if not spec:
            return cls("float32")
        return cls(str(spec["name"]), float(spec.get("scale", 1.0)), int(spec.get("zero", 0)))

    def attrs(self) -> dict:
        """The ``califlow_encoding`` attribute (with the largest error per value, ``max_error``)."""
        out = {"name": self.name, "max_error": self.max_error}
        if self.name == "uint16-scaled":
            out.update(scale=self.scale, zero=self.zero)
        return out

    @property
    def max_error(self) -> float | str:
        """Largest error per value: absolute for uint16-scaled, relative (str) for float16, 0 for float32."""
        if self.name == "uint16-scaled":
            return self.scale / 2
        return "2**-11 relative" if self.name == "float16" else 0.0

    def first_unstorable(self, block: np.ndarray) -> int:
        """Index of the first frame of ``block`` (n, h, w) that this encoding cannot hold, -1 if none.

        Only float16 can refuse a value: a uint16-scaled encoding is made for the range of
        the very frames it stores (:meth:`for_range`).
        """
        if self.name != "float16":
            return -1
        bad = np.abs(block).reshape(len(block), -1).max(axis=1, initial=0) > FLOAT16_MAX
        return int(np.argmax(bad)) if bad.any() else -1

    def encode(self, block: np.ndarray) -> np.ndarray:
        """float32 values -> stored values (uint16 codes are rounded and clipped to 0..65535)."""
        if self.name == "uint16-scaled":
            codes = np.rint(np.asarray(block, np.float32) * np.float32(1.0 / self.scale)) + np.float32(self.zero)
            return np.clip(codes, 0, _TOP).astype(np.uint16)
        return np.asarray(block, self.dtype)

    def decode(self, stored: np.ndarray) -> np.ndarray:
        """Stored values -> float32 values."""
        if self.name == "uint16-scaled":
            out = np.asarray(stored, np.float32) - np.float32(self.zero)
            out *= np.float32(self.scale)
            return out
        return np.asarray(stored, np.float32)

