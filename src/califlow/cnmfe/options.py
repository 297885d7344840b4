"""CNMF-E options: the ``cnmfe`` config group plus the sizes derived from ``gSig``.

Every name of the CaliAli CNMF-E table keeps its name and default (they live in
``schemas/config.schema.yaml``); this module only gathers them into one frozen object and
derives the pixel sizes the algorithms use, so that every step reads the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from califlow import sizes
from califlow.params import ConfigError, numeric_gsig, resolve_config, round_half_up

__all__ = ["CnmfeOptions", "options_from_config"]

#: Fields copied as they are from the resolved ``cnmfe`` group (same name, already typed by the schema).
_PLAIN_FIELDS = ("memory_size_per_patch", "w_overlap", "batch_sz", "min_corr", "min_pnr", "with_dendrites",
                 "spatial_algorithm", "deconv_flag", "merge_thr", "dmin", "bg_neuron_factor", "bg_ssub",
                 "max_iter", "n_processes", "refine_iter", "bg_fit_frames", "residual_search", "remove_BV",
                 "bv_threshold", "min_contrast")

@dataclass(frozen=True)
class CnmfeOptions:
    """Resolved CNMF-E parameters (pixels of the aligned movie, frames).

    Attributes mirror the ``cnmfe`` config group; ``gSig`` comes from ``general``, ``fps``
    from the aligned store and ``gSiz`` from gSig (:func:`califlow.sizes.gsiz`). No field has
    a default: the schema holds them, so build instances with :meth:`from_resolved` or
    :func:`options_from_config` (and :func:`dataclasses.replace` to change one).
    """

    gSig: float
    gSiz: float
    fps: float
    memory_size_to_use: float | None
    memory_size_per_patch: float
    patch_dims: tuple[int, int]
    w_overlap: int
    batch_sz: int
    min_corr: float
    min_pnr: float
    min_pixel: int
    with_dendrites: bool
    connected: bool
    circular: bool
    spatial_algorithm: str
    deconv_flag: bool
    deconv_options: Mapping[str, Any]
    merge_thr: float
    merge_thr_spatial: tuple[float, float, float]
    dmin: float
    bg_neuron_factor: float
    bg_ssub: int
    max_iter: int
    n_processes: int
    refine_iter: int
    bg_fit_frames: int
    residual_search: bool
    remove_BV: bool
    bv_threshold: float
    min_contrast: float
    final_deconv: Mapping[str, Any]
    session_activity: Mapping[str, float]

    @classmethod
    def from_resolved(cls, cfg: Mapping, *, fps: float | None = None) -> CnmfeOptions:
        """Options from a configuration already resolved by :func:`califlow.params.resolve_config`.

        ``fps`` (Hz) is the aligned movie's frame rate; ``general.sf`` when not given.
        """
        cn = cfg["cnmfe"]
        gsig = numeric_gsig(cfg)
        rate = float(fps) if fps else float(cfg["general"]["sf"])
        if not rate > 0:
            raise ConfigError(f"cnmfe: frame rate must be > 0, got {rate!r}")
        memory = cn["memory_size_to_use"]
        plain = {name: cn[name] for name in _PLAIN_FIELDS}
        return cls(gSig=gsig, gSiz=float(sizes.gsiz(gsig)), fps=rate,
                   memory_size_to_use=None if memory is None else float(memory),
                   patch_dims=(int(cn["patch_dims"][0]), int(cn["patch_dims"][1])),
                   min_pixel=int(cn["min_pixel"]), connected=bool(cn["spatial_constraints"]["connected"]),
                   circular=bool(cn["spatial_constraints"]["circular"]),
                   deconv_options=dict(cn["deconv_options"]),
                   merge_thr_spatial=tuple(float(v) for v in cn["merge_thr_spatial"]),
                   final_deconv=dict(cn["final_deconv_options"]),
                   session_activity={k: float(v) for k, v in cn["session_activity"].items()}, **plain)

    # ---- derived sizes (califlow.sizes) ------------------------------------------------
    @property
    def local_max_radius(self) -> float:
        """Radius of the disk in which a seed must be the maximum (px)."""
        return sizes.local_max_radius(self.gSig)

    @property
    def contrast_window(self) -> int:
        """Side of the neighbourhood whose median Cn*PNR a seed must exceed ``min_contrast`` times (px)."""
        return sizes.contrast_window(self.gSig)

    @property
    def box_radius(self) -> int:
        """Half-width of the box cut around a seed at initialisation (6 gSig, px)."""
        return sizes.box_radius(self.gSig)

    @property
    def ring_radius(self) -> int:
        """Ring radius of the background model in full-resolution pixels (bg_neuron_factor * gSiz)."""
        return max(1, round_half_up(sizes.ring_radius(self.gSig, self.bg_neuron_factor)))

    @property
    def search_radius(self) -> int:
        """Radius (px) of the dilation that gives the spatial search support (bSiz = 5 with dendrites)."""
        return 5 if self.with_dendrites else max(2, round_half_up(self.gSig))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["patch_dims"] = list(self.patch_dims)
        out["merge_thr_spatial"] = list(self.merge_thr_spatial)
        out["deconv_options"] = dict(self.deconv_options)
        out["final_deconv"] = dict(self.final_deconv)
        out["session_activity"] = dict(self.session_activity)
        return out


def options_from_config(config: Mapping | None = None, *, fps: float | None = None) -> CnmfeOptions:
    """Build :class:`CnmfeOptions` from a (partial or resolved) califlow configuration.

    Parameters
    ----------
    config : mapping, optional
        A configuration as loaded from ``config.yaml``; it is validated and resolved here
        (defaults from the schema, ``min_pixel`` derived).
    fps : float, optional
        Frame rate of the aligned movie (Hz); ``general.sf`` when not given.

    Raises
    ------
    ConfigError
        For any invalid value (the message names the key).
    """
    return CnmfeOptions.from_resolved(resolve_config(config or {}), fps=fps)
