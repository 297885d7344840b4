"""Parameters of the ground-truth simulator and its named presets.

All lengths are in raw-frame pixels, times in seconds unless a name says ``_frames``,
intensities in digital numbers (DN) of the written movie above the dark ``offset``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from califlow.errors import ConfigError

__all__ = ["SimulationConfig", "PRESETS", "preset", "parse_override"]


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that defines one simulated animal (the seed is passed separately).

    Attributes are grouped as: geometry and timing, neurons, activity, background and
    vessels, motion, inter-session change, camera.  Defaults are the ``"default"`` preset.
    """

    # --- geometry and timing -----------------------------------------------------------
    height: int = 256                 #: raw frame height (px)
    width: int = 256                  #: raw frame width (px)
    n_sessions: int = 4               #: sessions per animal
    frames_per_session: int = 1000    #: frames per session
    fps: float = 20.0                 #: frame rate (Hz)
    # --- neurons -----------------------------------------------------------------------
    n_neurons: int = 80               #: neurons placed in the reference FOV
    neuron_diameter: float = 7.0      #: footprint diameter at half maximum (px); ~7 px fits gSig 2.5
    size_jitter: float = 0.15         #: relative std of per-neuron size
    min_spacing: float = 8.0          #: minimum distance between neuron centres (px)
    edge_margin: float = 6.0          #: neuron centres keep this far from the FOV border (px)
    footprint_source: str = "auto"    #: "auto" (real when available) | "real" | "gaussian"
    footprint_bank: str = "DG"        #: real bank: "DG" (A.mat) or "CA1" (A2.mat)
    dendrite_weight: float = 0.2      #: relative weight of a faint dendrite-like extension (gaussian)
    halo_weight: float = 0.15         #: neuropil-like halo added to the movie with each trace
    halo_sigma: float = 10.0          #: Gaussian width of the halo (px)
    n_defocused: int = 0              #: out-of-focus cells: blurred sources with calcium transients, not neurons
    defocus_sigma: float = 1.0        #: their Gaussian width (neuron diameters)
    defocus_amplitude: float = 0.5    #: their event amplitude at the blob peak (fraction of ``amplitude``)
    # --- activity ----------------------------------------------------------------------
    rate_hz: float = 0.2              #: median event rate (Hz)
    rate_spread: float = 0.6          #: log-normal sigma of the per-neuron rate
    rate_min_hz: float = 0.05         #: rates are clipped to [rate_min_hz, rate_max_hz]
    rate_max_hz: float = 0.5
    correlation: float = 0.0          #: 0..1, weight of shared latent rate modulation
    tau_rise: float = 0.15            #: calcium rise time constant (s)
    tau_decay: float = 0.8            #: calcium decay time constant (s)
    tau_jitter: float = 0.1           #: relative std of per-neuron time constants
    amplitude: float = 30.0           #: median single-event peak amplitude at illumination 1 (DN)
    amplitude_spread: float = 0.3     #: log-normal sigma of per-neuron amplitudes
    event_jitter: float = 0.25        #: log-normal sigma of per-event amplitudes
    overlap: float = 1.0              #: P(neuron active in a session other than its own)
    # --- background and vessels --------------------------------------------------------
    baseline: float = 110.0           #: tissue fluorescence at illumination 1 (DN)
    texture: float = 0.08             #: relative amplitude of smooth tissue texture
    vignetting: float = 0.35          #: relative illumination loss at the FOV corners
    global_fluct: float = 0.06        #: relative std of the global background fluctuation
    n_local_sources: int = 14         #: wide local background sources
    local_sigma: float = 22.0         #: their spatial width (px)
    local_amp: float = 18.0           #: their fluctuation std (DN)
    background_tau: float = 4.0       #: time scale of background random walks (s)
    background_source: str = "synthetic"  #: "synthetic" | "real" (CNMF-E F_global/F_vessel) | "auto"
    vessels: float = 0.45             #: vessel contrast: fraction of light absorbed at a vessel centre
    n_vessels: int = 5                #: vessel trees
    vessel_width: tuple[float, float] = (2.0, 7.0)  #: range of vessel widths (px)
    vessel_pulse: float = 0.1         #: relative std of vessel contrast fluctuation
    # --- within-session motion ---------------------------------------------------------
    motion_std: float = 1.5           #: stationary std of AR(1) translation per axis (px)
    motion_phi: float = 0.95          #: AR(1) coefficient per frame
    n_jumps: int = 1                  #: sudden persistent displacements per session
    jump_max: float = 4.0             #: largest jump (px)
    wobble: float = 0.0               #: amplitude of within-session non-rigid wobble (px)
    wobble_scale: float = 40.0        #: spatial scale of the wobble field (px)
    # --- inter-session change ----------------------------------------------------------
    translation: float = 12.0         #: inter-session translation norm, up to (px)
    deformation: float = 3.0          #: inter-session non-rigid amplitude (px)
    deformation_scale: float = 50.0   #: its spatial smoothing sigma (px)
    session_baseline_change: float = 0.05  #: relative std of per-session brightness
    session_vessel_change: float = 0.1     #: relative std of per-session vessel contrast
    # --- camera ------------------------------------------------------------------------
    dtype: str = "uint8"              #: "uint8" (Miniscope) | "uint16" (Inscopix-like)
    offset: float = 8.0               #: dark offset (DN)
    gain: float = 0.4                 #: DN per photo-electron (shot noise variance = gain * signal)
    read_noise: float = 1.5           #: read-noise std (DN)
    exact_poisson: bool = False       #: exact Poisson draws instead of the Gaussian approximation
    # --- output ------------------------------------------------------------------------
    frames_per_file: int = 1000       #: frames per AVI chunk file (Miniscope V4: 1000)
    chunk_frames: int = 100           #: frames rendered per internal block when writing

    def replace(self, **overrides: Any) -> SimulationConfig:
        """Return a copy with ``overrides`` applied and validated."""
        return _validated(dataclasses.replace(self, **_coerce(overrides)))

    def as_uint16(self, scale: float = 10.0, offset: float = 100.0) -> SimulationConfig:
        """16-bit (Inscopix-like) copy: intensities and noise scaled by ``scale``, same SNR.

        ``baseline``, ``amplitude``, ``local_amp``, ``read_noise`` and ``gain`` are multiplied by
        ``scale`` (shot-noise variance gain*x then scales by scale**2, like the signal power).
        """
        return self.replace(dtype="uint16", offset=offset, baseline=self.baseline * scale,
                            amplitude=self.amplitude * scale, local_amp=self.local_amp * scale,
                            read_noise=self.read_noise * scale, gain=self.gain * scale)

    def with_neuron_diameter(self, diameter: float, *, max_side: int = 512, min_neurons: int = 40,
                             keep_fov: bool = False) -> SimulationConfig:
        """The same preparation with neurons of ``diameter`` px (half-maximum diameter).

        As if the tissue were imaged at another magnification: lengths tied to the neuron
        size (``min_spacing``, ``edge_margin``, and ``halo_sigma``, ``local_sigma`` when they
        grow) scale by ``f = diameter / neuron_diameter``; the field of view grows by ``f``
        up to ``max_side`` px per side (unless ``keep_fov``), and the neuron count follows the
        area in neuron units, with at least ``min_neurons``, so that the relative density
        stays that of this configuration wherever the field allows it.
        """
        f = float(diameter) / float(self.neuron_diameter)
        h, w = self.height, self.width
        if not keep_fov and f > 1:
            h = int(min(round(h * f), max(max_side, h)))
            w = int(min(round(w * f), max(max_side, w)))
        area = (h * w) / (self.height * self.width)
        n = max(int(min_neurons), int(round(self.n_neurons * area / f ** 2)))
        return self.replace(neuron_diameter=float(diameter), height=h, width=w, n_neurons=n,
                            min_spacing=self.min_spacing * f, edge_margin=max(3.0, self.edge_margin * f),
                            halo_sigma=self.halo_sigma * max(1.0, f), local_sigma=self.local_sigma * max(1.0, f))

    def with_density(self, spacing: float, fill: float) -> SimulationConfig:
        """Neurons at least ``spacing`` diameters apart whose half-maximum disks cover ``fill`` of the field.

        The default preset covers about 0.05; 0.015 is sparse, and ``spacing`` < 1 with
        ``fill`` 0.2 gives touching and overlapping neurons.
        """
        d = float(self.neuron_diameter)
        n = max(1, int(round(fill * self.height * self.width / (math.pi * d * d / 4))))
        return self.replace(n_neurons=n, min_spacing=float(spacing) * d)

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-safe)."""
        out = dataclasses.asdict(self)
        out["vessel_width"] = list(self.vessel_width)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> SimulationConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return _validated(cls(**_coerce(dict(d))))

    def __post_init__(self):
        _check(self)


_FIELDS = {f.name: f for f in fields(SimulationConfig)}


def _coerce(overrides: dict) -> dict:
    out = {}
    for key, value in overrides.items():
        if key not in _FIELDS:
            raise ConfigError(f"simulate: unknown parameter {key!r}; valid: {', '.join(sorted(_FIELDS))}")
        if key == "vessel_width" and value is not None:
            value = tuple(float(v) for v in value)
        out[key] = value
    return out


def _check(c: SimulationConfig) -> None:
    def bad(name, why):
        raise ConfigError(f"simulate: parameter {name}={getattr(c, name)!r} {why}")

    for name in ("height", "width"):
        if int(getattr(c, name)) < 32:
            bad(name, "must be at least 32 px")
    for name in ("n_sessions", "frames_per_session", "frames_per_file", "chunk_frames"):
        if int(getattr(c, name)) < 1:
            bad(name, "must be a positive integer")
    for name in ("fps", "neuron_diameter", "tau_rise", "tau_decay", "amplitude", "baseline",
                 "local_sigma", "background_tau", "deformation_scale", "wobble_scale", "halo_sigma",
                 "defocus_sigma"):
        if not float(getattr(c, name)) > 0:
            bad(name, "must be > 0")
    for name in ("n_neurons", "n_local_sources", "n_vessels", "n_jumps", "min_spacing", "edge_margin",
                 "size_jitter", "rate_spread", "tau_jitter", "amplitude_spread", "event_jitter", "texture",
                 "global_fluct", "local_amp", "vessel_pulse", "motion_std", "jump_max", "wobble",
                 "translation", "deformation", "session_baseline_change", "session_vessel_change",
                 "offset", "gain", "read_noise", "halo_weight", "dendrite_weight", "rate_min_hz",
                 "n_defocused", "defocus_amplitude"):
        if float(getattr(c, name)) < 0:
            bad(name, "must be >= 0")
    for name in ("overlap", "correlation", "vignetting", "vessels"):
        if not 0 <= float(getattr(c, name)) <= 1:
            bad(name, "must lie in [0, 1]")
    if not 0 <= c.motion_phi < 1:
        bad("motion_phi", "must lie in [0, 1)")
    if c.tau_rise >= c.tau_decay:
        bad("tau_rise", f"must be smaller than tau_decay={c.tau_decay}")
    if c.rate_max_hz < c.rate_min_hz:
        bad("rate_max_hz", f"must be >= rate_min_hz={c.rate_min_hz}")
    if c.footprint_source not in ("auto", "real", "gaussian"):
        bad("footprint_source", "must be 'auto', 'real' or 'gaussian'")
    if c.footprint_bank not in ("DG", "CA1"):
        bad("footprint_bank", "must be 'DG' or 'CA1'")
    if c.background_source not in ("auto", "real", "synthetic"):
        bad("background_source", "must be 'auto', 'real' or 'synthetic'")
    if c.dtype not in ("uint8", "uint16"):
        bad("dtype", "must be 'uint8' or 'uint16'")
    if len(c.vessel_width) != 2 or not 0 < c.vessel_width[0] <= c.vessel_width[1]:
        bad("vessel_width", "must be (min, max) with 0 < min <= max")


def _validated(c: SimulationConfig) -> SimulationConfig:
    _check(c)
    return c


_BASE = SimulationConfig()
_DENSE_LOWSNR = _BASE.replace(n_neurons=200, min_spacing=6.0, amplitude=14.0, gain=0.6, read_noise=2.0,
                              overlap=0.5, correlation=0.3, local_amp=24.0)

#: Named configurations. ``"default"`` is :class:`SimulationConfig` itself.
PRESETS: dict[str, SimulationConfig] = {
    "demo": _BASE.replace(height=160, width=160, n_sessions=3, frames_per_session=300, n_neurons=30,
                          n_local_sources=8, n_vessels=4, translation=8.0, deformation=2.0,
                          amplitude=40.0),
    "default": _BASE,
    "dense_lowsnr": _DENSE_LOWSNR,
    "vessel_poor": _BASE.replace(vessels=0.08, n_vessels=2, vessel_width=(1.5, 3.0)),
    "wobble": _BASE.replace(wobble=2.0, deformation=5.0),
    "benchmark_608": _BASE.replace(height=608, width=608, n_sessions=2, frames_per_session=3000, n_neurons=300,
                                   neuron_diameter=11.0, min_spacing=11.0, local_sigma=50.0, n_local_sources=20,
                                   halo_sigma=15.0, deformation_scale=100.0, n_vessels=8,
                                   vessel_width=(3.0, 12.0), translation=20.0, deformation=6.0,
                                   motion_std=2.5, jump_max=6.0),
    # the range labs record (issue: robust extraction); listed in docs/architecture.md
    "small_neurons": _BASE.with_neuron_diameter(5.0),
    "large_neurons": _BASE.with_neuron_diameter(16.0),
    "huge_neurons": _BASE.with_neuron_diameter(20.0),
    "ca1": _BASE.replace(footprint_bank="CA1", neuron_diameter=8.0),
    "sparse": _BASE.with_density(2.0, 0.015),
    "touching": _BASE.with_density(0.8, 0.2),
    "pnr3": _BASE.replace(amplitude=11.4),
    "pnr20": _BASE.replace(amplitude=75.7),
    "vessel_rich": _BASE.replace(n_vessels=10, vessels=0.6, vessel_width=(3.0, 10.0), vessel_pulse=0.15),
    # out-of-focus cells (diffuse blobs with transients) over a sparse and a dense low-SNR field
    "defocused": _BASE.replace(n_defocused=16),
    "defocused_dense": _DENSE_LOWSNR.replace(n_defocused=16),
    "inscopix": _BASE.replace(height=400, width=640, n_sessions=3, frames_per_session=2000, n_neurons=220,
                              min_spacing=7.0).as_uint16(scale=16.0),
}


def preset(name: str, **overrides: Any) -> SimulationConfig:
    """The preset ``name`` with ``overrides`` (field=value) applied.

    Raises
    ------
    ConfigError
        Unknown preset or parameter, or an invalid value (the message names it).
    """
    if name not in PRESETS:
        raise ConfigError(f"simulate: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` (value as YAML: numbers, booleans, lists, strings)."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"simulate: --set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key not in _FIELDS:
        raise ConfigError(f"simulate: unknown parameter {key!r} in --set {text!r}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"simulate: cannot parse the value of --set {text!r}: {exc}") from None
    return key, value

