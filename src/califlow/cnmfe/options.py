"""CNMF-E options: the ``cnmfe`` config group plus the sizes derived from ``gSig``.

Every name of the CaliAli CNMF-E table keeps its name and default (they live in
``schemas/config.schema.yaml``); this module only gathers them into one frozen object and
derives the pixel sizes the algorithms use, so that every step reads the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from califlow import sizes
from califlow.params import ConfigError, numeric_gsig, resolve_config, round_half_up

__all__ = ["CnmfeOptions", "options_from_config"]



@dataclass(frozen=True)
class CnmfeOptions:
    """Resolved CNMF-E parameters (pixels of the aligned movie, frames).

    Attributes mirror the ``cnmfe`` config group; ``gSig`` comes from ``general`` and ``fps``
    from the aligned store.  Derived sizes are properties (:mod:`califlow.sizes`).
    """

    gSig: float = 2.5
    gSiz: float = 10.0
    fps: float = 10.0
    memory_size_to_use: float = 8.0
    memory_size_per_patch: float = 16.0
    patch_dims: tuple[int, int] = (64, 64)
    w_overlap: int = 32
    batch_sz: int = 0
    min_corr: float = 0.1
    min_pnr: float = 6.0
    min_pixel: int = 6
    with_dendrites: bool = True
    connected: bool = False
    circular: bool = False
    spatial_algorithm: str = "hals_thresh"
    deconv_flag: bool = True
    deconv_options: Mapping[str, Any] = field(default_factory=lambda: {
        "type": "ar1", "method": "foopsi", "smin": -5, "optimize_pars": True, "max_tau": 100})
    merge_thr: float = 0.65
    merge_thr_spatial: tuple[float, float, float] = (0.8, 0.4, -math.inf)
    dmin: float = 5.0
    bg_neuron_factor: float = 1.5
    bg_ssub: int = 2
    max_iter: int = 4
    n_processes: int = 1
    refine_iter: int = 1
    bg_fit_frames: int = 150
    residual_search: bool = True
    remove_BV: bool = True
    bv_threshold: float = 0.3
    min_contrast: float = 20.0
    final_deconv: Mapping[str, Any] = field(default_factory=lambda: {
        "type": "ar2", "method": "constrained", "smin": 0, "optimize_pars": True, "max_tau": 100,
        "fudge_factor": 1.0})

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
        return out


def options_from_config(config: Mapping | None = None, *, fps: float | None = None) -> CnmfeOptions:
    """Build :class:`CnmfeOptions` from a (partial or resolved) califlow configuration.

    Parameters
    ----------
    config : mapping, optional
        A configuration as loaded from ``config.yaml``; it is validated and resolved here
        (defaults filled, ``min_pixel`` and ``gSiz`` derived).
    fps : float, optional
        Frame rate of the aligned movie (Hz); ``general.sf`` when not given.

    Raises
    ------
    ConfigError
        For any invalid value (the message names the key).
    """
    cfg = resolve_config(config or {})
    cn = cfg["cnmfe"]
    gsig = numeric_gsig(cfg)
    rate = float(fps) if fps else float(cfg["general"]["sf"])
    if not rate > 0:
        raise ConfigError(f"cnmfe: frame rate must be > 0, got {rate!r}")
    sc = cn["spatial_constraints"]
    return CnmfeOptions(
        gSig=gsig,
        gSiz=float(cn["gSiz"]),
        fps=rate,
        memory_size_to_use=float(cn["memory_size_to_use"]),
        memory_size_per_patch=float(cn["memory_size_per_patch"]),
        patch_dims=(int(cn["patch_dims"][0]), int(cn["patch_dims"][1])),
        w_overlap=int(cn["w_overlap"]),
        batch_sz=int(cn["batch_sz"]),
        min_corr=float(cn["min_corr"]),
        min_pnr=float(cn["min_pnr"]),
        min_pixel=int(cn["min_pixel"]),
        with_dendrites=bool(cn["with_dendrites"]),
        connected=bool(sc.get("connected", False)),
        circular=bool(sc.get("circular", False)),
        spatial_algorithm=str(cn["spatial_algorithm"]),
        deconv_flag=bool(cn["deconv_flag"]),
        deconv_options=dict(cn["deconv_options"]),
        merge_thr=float(cn["merge_thr"]),
        merge_thr_spatial=tuple(float(v) for v in cn["merge_thr_spatial"]),
        dmin=float(cn["dmin"]),
        bg_neuron_factor=float(cn["bg_neuron_factor"]),
        bg_ssub=int(cn["bg_ssub"]),
        max_iter=int(cn["max_iter"]),
        n_processes=int(cn["n_processes"]),
        refine_iter=int(cn.get("refine_iter", 1)),
        bg_fit_frames=int(cn.get("bg_fit_frames", 150)),
        residual_search=bool(cn.get("residual_search", True)),
        remove_BV=bool(cn.get("remove_BV", True)),
        bv_threshold=float(cn.get("bv_threshold", 0.3)),
        min_contrast=float(cn.get("min_contrast", 20.0)),
        final_deconv=dict(cn["final_deconv_options"]),
    )
