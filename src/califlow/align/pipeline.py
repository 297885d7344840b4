"""Inter-session alignment of one animal: translation, non-rigid, BV score, common FOV.

:func:`align_sessions` takes every session's projections and returns an :class:`Alignment`
holding one absolute sampling map (2, H, W) per session (see :mod:`califlow.align.maps`),
the path that ran ('BV', 'neuron' or 'none'), the BV stability score, image metrics for
every stage and the common field of view. :func:`save_alignment` writes it as
``alignment.zarr``; :func:`load_alignment` reads it back.

Stages (each logged, with metrics):

- ``none``: sessions centre-cropped to the common size (the grid of the alignment);
- ``translation``: groupwise sub-pixel translation (:mod:`califlow.align.translation`);
- ``non-rigid``: groupwise multi-resolution demons, vessels coarse → neurons fine
  (:mod:`califlow.align.groupwise`);
- BV score of the vessel-driven result; below ``bv_score_threshold`` (and without
  ``Force_BV``) translation and non-rigid are redone on neurons only (path 'neuron');
- ``final_neurons`` (optional): a neuron-only refinement at the two finest levels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from califlow.align.demons import pyramid_for
from califlow.align.features import MIN_ALIGN_SIDE, check_projections, neuron_image, normalise01, registration_channels
from califlow.align.fov import common_fov
from califlow.align.groupwise import groupwise_nonrigid, warp_channels
from califlow.align.maps import identity_map
from califlow.align.quality import alignment_metrics
from califlow.align.score import bv_stability_score
from califlow.align.translation import groupwise_translation
from califlow.cohort_check import size_difference
from califlow.errors import InputError
from califlow.params import numeric_gsig

__all__ = ["Alignment", "AlignOptions", "align_sessions", "align_options", "save_alignment", "load_alignment", "STAGES"]

log = logging.getLogger("califlow.align")

STAGES = ("none", "translation", "non-rigid", "final_neurons")
MODES = ("BV+neuron", "BV", "neuron")


@dataclass
class Alignment:
    """Result of :func:`align_sessions`.

    Attributes
    ----------
    names : list of str
        Sessions kept (in order); ``maps[i]`` belongs to ``names[i]``.
    maps : ndarray (S, 2, H, W) float32
        Absolute (y, x) position in each session's projection frame sampled by each aligned
        pixel; NaN where the session does not cover it.
    session_shapes : list of (h, w)
        Frame shape of each kept session.
    path : str
        'BV', 'neuron' (by choice or BV-score fallback) or 'none' (no registration).
    bv_score : float or None
        BV stability score of the vessel-driven alignment (None when not computed).
    fallback : bool
        True when the BV score sent the alignment to the neuron path.
    translations : ndarray (S, 2)
        Groupwise translation (px, mean zero over the input sessions) of the path that ran.
    offsets : ndarray (S, 2)
        Centre-crop origin of each session in its own frame (px).
    box : (y0, y1, x0, x1)
        Crop of the common grid that became the aligned frame.
    fov : dict
        Field-of-view decision (see :func:`califlow.align.fov.common_fov`).
    metrics : dict
        stage -> {"neuron": {...}, "bv": {...}} image metrics
        (:func:`califlow.align.quality.alignment_metrics`).
    dropped : list of str
        Sessions left out by ``fov_policy='drop'``.
    params : dict
        Options used.
    info : dict
        Diagnostics (translation links, non-rigid updates per round, BV pair scores).
    qc : dict
        stage -> {"bv"|"neuron": (S, H, W)} images of every session (names in
        ``info["qc_sessions"]``) in the aligned frame, for the QC overlays (not saved).
    stage_maps : dict
        stage -> (S, 2, H, W) maps of every input session after that stage, on the aligned
        frame, without NaN (for diagnostics and benchmarks; not saved).
    """

    names: list[str]
    maps: np.ndarray
    session_shapes: list[tuple[int, int]]
    path: str
    bv_score: float | None
    fallback: bool
    translations: np.ndarray
    offsets: np.ndarray
    box: tuple[int, int, int, int]
    fov: dict
    metrics: dict
    dropped: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    qc: dict = field(default_factory=dict)
    stage_maps: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the aligned frame."""
        return tuple(self.maps.shape[2:])

    def map_of(self, name: str) -> np.ndarray:
        """The (2, H, W) map of session ``name``."""
        try:
            return self.maps[self.names.index(name)]
        except ValueError:
            raise KeyError(f"session {name!r} is not in this alignment (sessions: {self.names}; "
                           f"dropped: {self.dropped})") from None


@dataclass(frozen=True)
class AlignOptions:
    """Options of :func:`align_sessions`: the ``inter_session_alignment`` group and ``general.gSig``.

    Field names are the config keys (``projections`` is the images that drive the
    alignment: 'BV+neuron', 'BV' or 'neuron'). No field has a default: the schema holds them;
    build instances with :func:`align_options` (and :func:`dataclasses.replace` to change one).
    """

    do_alignment: bool
    projections: str
    final_neurons: bool
    Force_BV: bool
    bv_score_threshold: float
    fov_policy: str
    max_fov_loss: float
    nonrigid_smoothness: float
    nonrigid_rounds: int
    bv_score_draws: int
    bv_score_seed: int
    max_size_difference: float
    gSig: float

    def to_dict(self) -> dict:
        return asdict(self)


#: Keys of ``inter_session_alignment`` that :class:`AlignOptions` holds (all but gSig).
_OPTION_KEYS = tuple(f.name for f in fields(AlignOptions) if f.name != "gSig")


def align_options(config: Mapping[str, Any] | None = None, **changes) -> AlignOptions:
    """:class:`AlignOptions` from a (partial or resolved) califlow configuration.

    Parameters
    ----------
    config : mapping, optional
        Configuration; validated and resolved here (defaults from the schema). gSig must be
        a number (apply a measured neuron size first when it is 'auto').
    **changes
        Fields to override, e.g. ``max_fov_loss=0.5``.
    """
    from califlow.params import resolve_config

    cfg = resolve_config(config or {})
    g = cfg["inter_session_alignment"]
    opts = AlignOptions(gSig=numeric_gsig(cfg), **{k: g[k] for k in _OPTION_KEYS})
    return replace(opts, **changes)


def _common_grid(shapes: Sequence[tuple[int, int]], names: Sequence[str], max_size_difference: float
                 ) -> tuple[tuple[int, int], np.ndarray]:
    h0, w0 = min(int(s[0]) for s in shapes), min(int(s[1]) for s in shapes)
    worst = size_difference(shapes)
    if worst > max_size_difference:
        listing = ", ".join(f"{n}: {s[0]}x{s[1]}" for n, s in zip(names, shapes))
        raise InputError(
            f"sessions differ in frame size by {100 * worst:.0f}% (> {100 * max_size_difference:.0f}%): {listing}. "
            "They cannot be the same field of view at the same spatial_ds; check the recordings and "
            "downsampling.spatial_ds.")
    offsets = np.array([((h - h0) // 2, (w - w0) // 2) for h, w in shapes], dtype=np.float64)
    return (h0, w0), offsets


def _qc_pick(n: int) -> list[int]:
    """Sessions whose aligned images the QC overlays show: every one (each has its colour)."""
    return list(range(n))


class _Stager:
    """Warps the [0, 1] images of every session through stage maps; records metrics and QC images."""

    def __init__(self, images: dict[str, list[np.ndarray]], masks: list[np.ndarray], shape: tuple[int, int]):
        self.images = images
        self.masks = masks
        self.shape = shape
        self.metrics: dict = {}
        self.qc: dict = {}
        self.maps: dict = {}

    def valid(self, maps: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([warp_channels({}, m, mp)[1] for m, mp in zip(self.masks, maps)])

    def aligned(self, maps: Sequence[np.ndarray], channel: str) -> tuple[np.ndarray, np.ndarray]:
        out, val = [], []
        for img, m, mp in zip(self.images[channel], self.masks, maps):
            w, v = warp_channels({"x": img}, m, mp)
            out.append(np.where(v, w["x"], np.nan))
            val.append(v)
        return np.stack(out).astype(np.float32), np.stack(val)

    def record(self, stage: str, maps: Sequence[np.ndarray]) -> None:
        self.maps[stage] = np.stack(maps)
        self.metrics[stage] = {}
        self.qc[stage] = {}
        pick = _qc_pick(len(maps))
        for ch in ("neuron", "bv"):
            imgs, val = self.aligned(maps, ch)
            common = np.logical_and.reduce(val, axis=0)
            self.metrics[stage][ch] = alignment_metrics(imgs, common)
            self.qc[stage][ch] = imgs[pick]
        m = self.metrics[stage]["neuron"]
        log.info("stage %-13s neuron corr with mean %.3f (min %.3f), crispness %.4f; BV corr %.3f",
                 stage, m["mean_corr"], m["min_corr"], m["crispness"], self.metrics[stage]["bv"]["mean_corr"])


def align_sessions(projections: Sequence[Mapping[str, np.ndarray]], names: Sequence[str] | None = None,
                   options: AlignOptions | None = None) -> Alignment:
    """Bring the sessions of one animal into one common frame.

    Parameters
    ----------
    projections : sequence of S mappings
        Per session ``{"mean", "bv", "cn", "pnr"}`` float32 (h_s, w_s) images (``bv`` and
        ``cn`` required); frames may differ by a few pixels between sessions.
    names : sequence of S str, optional
        Session names (default ``s0, s1, ...``).
    options : AlignOptions, optional
        From :func:`align_options` (the schema's defaults when not given). ``gSig`` (px) sets
        the local-contrast window (4 gSig); ``nonrigid_smoothness`` is in px of each pyramid
        level; ``max_size_difference`` is the largest relative difference of frame sizes.

    Returns
    -------
    Alignment
    """
    opts = options if options is not None else align_options()
    names = _session_names(projections, names)
    if opts.projections not in MODES:
        raise InputError(f"inter_session_alignment.projections must be one of {MODES}, not {opts.projections!r}")
    n = len(names)
    min_side = MIN_ALIGN_SIDE if opts.do_alignment and n >= 2 else 1  # the size limit is for registration
    shapes = [check_projections(p, nm, min_side=min_side) for p, nm in zip(projections, names)]
    grid, offsets = _common_grid(shapes, names, opts.max_size_difference)
    reg = _Registration(projections, names, grid, offsets, opts)
    if opts.do_alignment and n >= 2:
        reg.register()
    elif opts.do_alignment:
        log.info("one session: nothing to align")
    else:
        log.info("do_alignment is false: sessions are centre-cropped to the common size %dx%d", *grid)
    log.info("alignment path: %s%s", reg.path, " (BV-score fallback)" if reg.fallback else "")
    return reg.result(shapes)


def _session_names(projections: Sequence, names: Sequence[str] | None) -> list[str]:
    n = len(projections)
    if n == 0:
        raise InputError("align_sessions: no session given")
    names = [str(x) for x in (names if names is not None else [f"s{i}" for i in range(n)])]
    if len(names) != n or len(set(names)) != n:
        raise InputError(f"align_sessions: need {n} distinct session names, got {names}")
    for nm in names:
        if not nm or "/" in nm or nm.startswith("."):
            raise InputError(f"align_sessions: session name {nm!r} cannot name a store group (no '/', no leading '.')")
    return names


class _Registration:
    """The registration of one animal's sessions on a common grid, stage by stage."""

    def __init__(self, projections, names: list[str], grid: tuple[int, int], offsets: np.ndarray,
                 opts: AlignOptions):
        self.names, self.grid, self.offsets, self.opts = names, grid, offsets, opts
        sigma = max(4.0 * opts.gSig, 4.0)
        self.chans, self.masks, bv01, neu01 = [], [], [], []
        for p in projections:
            c, m = registration_channels(p, sigma=sigma)
            self.chans.append(c)
            self.masks.append(m)
            bv01.append(normalise01(p["bv"], m))
            neu01.append(normalise01(neuron_image(p, m), m))
        self.stager = _Stager({"bv": bv01, "neuron": neu01}, self.masks, grid)
        self.maps = [identity_map(grid, tuple(o)) for o in offsets]
        self.stager.record("none", self.maps)
        self.info: dict = {}
        self.translations = np.zeros((len(names), 2))
        self.path, self.score, self.fallback = "none", None, False

    def translate(self, key: str) -> np.ndarray:
        """Groupwise translation (S, 2) on the channels ``key`` ('bv', 'neuron' or 'bv+neuron')."""
        h0, w0 = self.grid
        crops = [np.stack([c[k][int(o[0]):int(o[0]) + h0, int(o[1]):int(o[1]) + w0] for k in key.split("+")])
                 for c, o in zip(self.chans, self.offsets)]
        mcrops = [m[int(o[0]):int(o[0]) + h0, int(o[1]):int(o[1]) + w0] for m, o in zip(self.masks, self.offsets)]
        t, tinfo = groupwise_translation(crops, mcrops)
        self.info[f"translation_{key}"] = tinfo
        return t

    def run(self, use: str) -> None:
        """Translation then groupwise non-rigid registration driven by ``use`` (a mode)."""
        key = {"BV+neuron": "bv+neuron", "BV": "bv", "neuron": "neuron"}[use]
        t = self.translate(key)
        maps_t = [identity_map(self.grid, tuple(o + tt)) for o, tt in zip(self.offsets, t)]
        log.info("translation (%s): %s", key,
                 "; ".join(f"{nm} ({a:+.2f}, {b:+.2f})" for nm, (a, b) in zip(self.names, t)))
        self.stager.record("translation", maps_t)
        pyramid = pyramid_for(use, smoothness=self.opts.nonrigid_smoothness)
        self.maps, self.info[f"non-rigid_{key}"] = groupwise_nonrigid(self.chans, self.masks, maps_t, self.offsets,
                                                                      pyramid, n_rounds=self.opts.nonrigid_rounds)
        self.stager.record("non-rigid", self.maps)
        self.translations = t

    def register(self) -> None:
        """Every stage: the configured path, the BV check and fallback, the final neuron pass."""
        mode = self.opts.projections
        self.run(mode)
        self.path = "neuron" if mode == "neuron" else "BV"
        if mode != "neuron":
            self.check_against_neurons()
            self.bv_decision()
        if self.opts.final_neurons:
            pyramid = pyramid_for("neuron", smoothness=self.opts.nonrigid_smoothness)[2:]
            self.maps, self.info["final_neurons"] = groupwise_nonrigid(self.chans, self.masks, self.maps,
                                                                       self.offsets, pyramid, n_rounds=2)
            self.stager.record("final_neurons", self.maps)

    def check_against_neurons(self) -> None:
        """Warn when the neurons alone put a session elsewhere than the vessels do.

        A vessel image dominated by a sensor-fixed pattern (lens dust, fixed-pattern noise)
        aligns the sessions to the sensor with a high BV score; the neurons disagree.
        """
        gap = np.hypot(*(self.translations - self.translate("neuron")).T)
        self.info["bv_neuron_translation_gap_px"] = gap.tolist()
        if gap.max() > 3.0:
            log.warning("vessels and neurons disagree on the position of session %r by %.1f px: the BV image "
                        "may hold a sensor-fixed pattern; check the QC overlays or use projections='neuron'",
                        self.names[int(np.argmax(gap))], gap.max())

    def bv_decision(self) -> None:
        """BV stability score of the vessel-driven result; below the threshold, redo on neurons."""
        o = self.opts
        bv_img, val = self.stager.aligned(self.maps, "bv")
        score, details = bv_stability_score(bv_img, np.logical_and.reduce(val, axis=0), n_draws=o.bv_score_draws,
                                            seed=o.bv_score_seed)
        wi, wj = details["worst_pair"]
        self.score = score
        self.info["bv_score"] = {"score": score, "worst_pair": [self.names[wi], self.names[wj]],
                                 "pair_scores": details["pair_scores"].tolist()}
        if score >= o.bv_score_threshold:
            log.info("BV stability score %.2f >= %.2f: vessel-based alignment kept", score, o.bv_score_threshold)
        elif o.Force_BV:
            log.warning("BV stability score %.2f < %.2f but Force_BV is set: keeping the vessel-based alignment",
                        score, o.bv_score_threshold)
        else:
            log.warning("BV stability score %.2f < %.2f (worst pair %s/%s): vessels do not support the "
                        "alignment; redoing it on neurons only (set Force_BV to keep the vessel result)",
                        score, o.bv_score_threshold, self.names[wi], self.names[wj])
            self.fallback, self.path = True, "neuron"
            self.info["bv_path_metrics"] = {k: self.stager.metrics[k] for k in ("translation", "non-rigid")}
            self.run("neuron")

    def result(self, shapes: list[tuple[int, int]]) -> Alignment:
        """The :class:`Alignment` on the common field of view."""
        names, stager = self.names, self.stager
        valid = stager.valid(self.maps)
        fov = common_fov(valid, names, policy=self.opts.fov_policy, max_fov_loss=self.opts.max_fov_loss)
        y0, y1, x0, x1 = fov["box"]
        kept = fov["kept"]
        final = np.stack([np.where(valid[k][None, y0:y1, x0:x1], self.maps[k][:, y0:y1, x0:x1], np.nan)
                          for k in kept])
        qc = {st: {ch: v[:, y0:y1, x0:x1] for ch, v in d.items()} for st, d in stager.qc.items()}
        self.info["qc_sessions"] = [names[i] for i in _qc_pick(len(names))]
        stage_maps = {st: m[:, :, y0:y1, x0:x1] for st, m in stager.maps.items()}
        return Alignment(names=[names[k] for k in kept], maps=final.astype(np.float32),
                         session_shapes=[shapes[k] for k in kept], path=self.path, bv_score=self.score,
                         fallback=self.fallback, translations=self.translations[kept], offsets=self.offsets[kept],
                         box=(y0, y1, x0, x1), fov=fov, metrics=stager.metrics, dropped=list(fov["dropped"]),
                         params=self.opts.to_dict(), info=self.info, qc=qc, stage_maps=stage_maps)


def save_alignment(alignment: Alignment, path: str | os.PathLike, *, inputs: Any = None,
                   config: Mapping | None = None) -> None:
    """Write ``alignment.zarr``: per session ``{name}/map`` (2, H, W) float32; all else in attrs."""
    from califlow.io.store import atomic_output, create_image, open_group, set_provenance, to_jsonable

    with atomic_output(path) as tmp:
        root = open_group(tmp, mode="w")
        for i, nm in enumerate(alignment.names):
            g = root.create_group(nm)
            create_image(g, "map", alignment.maps[i])
            g.attrs.update(to_jsonable({"session_shape": list(alignment.session_shapes[i]),
                                        "translation": alignment.translations[i],
                                        "offset": alignment.offsets[i]}))
        set_provenance(root, params=config if config is not None else alignment.params, inputs=inputs,
                       sessions=alignment.names, session_shapes=[list(s) for s in alignment.session_shapes],
                       shape=list(alignment.shape), path=alignment.path, bv_score=alignment.bv_score,
                       fallback=alignment.fallback, translations=alignment.translations,
                       offsets=alignment.offsets, box=list(alignment.box), fov=alignment.fov,
                       metrics=alignment.metrics, dropped=alignment.dropped, options=alignment.params,
                       info=alignment.info)


def load_alignment(path: str | os.PathLike) -> Alignment:
    """Read an ``alignment.zarr`` written by :func:`save_alignment` (without QC images)."""
    from califlow.io.store import open_group

    root = open_group(path)
    a = dict(root.attrs)
    names = list(a["sessions"])
    maps = np.stack([np.asarray(root[f"{nm}/map"][...]) for nm in names]).astype(np.float32)
    score = a.get("bv_score")
    return Alignment(names=names, maps=maps, session_shapes=[tuple(s) for s in a["session_shapes"]],
                     path=a["path"], bv_score=None if score is None else float(score),
                     fallback=bool(a["fallback"]), translations=np.asarray(a["translations"], float),
                     offsets=np.asarray(a["offsets"], float), box=tuple(a["box"]), fov=a["fov"],
                     metrics=a["metrics"], dropped=list(a["dropped"]), params=a.get("options", {}),
                     info=a.get("info", {}))
