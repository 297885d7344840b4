"""The workflow's ``neuron_size`` step: recordings -> ``neuron_size.json``, and its use by later jobs.

``neuron_size.json`` (one per animal) holds::

    measured       the pooled estimate (califlow.neuron_size.NeuronSize as a dict)
    sessions       per-session estimates: session, path, diameter, n_candidates, n_accepted, reason
    gSig_configured, neuron_diameter_configured
                   general.gSig ('auto' or a number) and general.neuron_diameter as configured
    gSig, neuron_diameter
                   what every later job uses (califlow.params.apply_neuron_size)
    warnings       human-readable warnings (a gSig far from the data's, no measurement)

Every job that derives a size from gSig (motion_correct, enhance, align_sessions, cnmfe)
reads it through :func:`job_config`, which applies it to the job's configuration and logs
the warnings, so they also reach each job's log.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from califlow.neuron_size import SAMPLE_FRAMES, measure_sessions, size_warning, stabilised_sample

__all__ = ["read_sample", "measure_recordings", "measure_frames", "write_neuron_size", "read_neuron_size",
           "job_config"]

log = logging.getLogger("califlow.neuron_size")


def read_sample(path: str | os.PathLike, cfg: Mapping, fps: float | None = None,
                n_frames: int = SAMPLE_FRAMES) -> tuple[np.ndarray, float]:
    """``n_frames`` consecutive frames from the middle of a recording, downsampled as ingest does.

    Frames marked dropped (NaN) are left out.  Returns (frames (n, h, w) float32, fps after
    ``temporal_ds``).
    """
    from califlow.errors import InputError
    from califlow.io import open_movie
    from califlow.preprocess.downsample import downsample

    ds = cfg["downsampling"]
    s, k = int(ds["spatial_ds"]), int(ds["temporal_ds"])
    source = open_movie(path, file_extension=ds["file_extension"], fps=fps)
    T = int(source.shape[0])
    want = min(T, n_frames * k)
    a = max(0, (T - want) // 2)
    try:
        frames = np.asarray(source.read(a, a + want), np.float32)
    except InputError as exc:  # a header that claims more frames than decode: take the first ones
        log.warning("%s: %s; measuring on the first %d frames instead", path, exc, want)
        frames = np.asarray(next(source.iter_chunks(want))[1], np.float32)
    small, _ = downsample(frames, s, k)
    good = np.isfinite(small).all(axis=(1, 2))
    rate = float(source.fps or fps or cfg["general"]["sf"]) / k
    return np.ascontiguousarray(small[good]), rate


def measure_recordings(paths: Sequence[str | os.PathLike], names: Sequence[str], config: Mapping,
                       fps: Sequence[float | None] | None = None) -> dict:
    """Measure the neuron size of one animal's recordings; returns the ``neuron_size.json`` content."""
    from califlow.params import resolve_config

    cfg = resolve_config(dict(config))
    samples = []
    for i, path in enumerate(paths):  # loop over sessions
        frames, rate = read_sample(path, cfg, None if fps is None else fps[i])
        log.info("%s: %d sample frames of %dx%d px at %.2f fps", names[i], *frames.shape, rate)
        samples.append((frames, rate))
    return measure_frames(samples, names, [str(p) for p in paths], cfg)


def measure_frames(samples: Sequence[tuple[np.ndarray, float]], names: Sequence[str], paths: Sequence[str],
                   config: Mapping) -> dict:
    """The ``neuron_size.json`` content from raw sample frames (T, H, W) and their frame rates.

    Each sample's rigid motion is corrected first (:func:`califlow.neuron_size.stabilised_sample`).
    """
    from califlow.motion.options import motion_options
    from califlow.params import default_config, resolve_config

    cfg = resolve_config(dict(config))
    gen = cfg["general"]
    # before the size is known, the sample is stabilised on vessels of the schema's default gSig
    probe = cfg if gen["gSig"] != "auto" else {**cfg, "general": {**gen, "gSig": default_config()["general"]["gSig"]}}
    motion = motion_options(probe, reference="BV")
    stable = [(stabilised_sample(f, motion, name=p), rate) for (f, rate), p in zip(samples, paths)]
    pooled, per = measure_sessions(stable, detrend_s=float(cfg["preprocessing"]["detrend"]))
    out = {
        "measured": pooled.to_dict(),
        "sessions": [{"session": n, "path": str(p), **{k: v for k, v in e.to_dict().items() if k != "diameters"}}
                     for n, p, e in zip(names, paths, per)],
        "gSig_configured": gen["gSig"], "neuron_diameter_configured": gen["neuron_diameter"],
    }
    out.update(_used_sizes(cfg, pooled))
    return out


def _used_sizes(cfg: Mapping, pooled) -> dict:
    """``gSig`` and ``neuron_diameter`` later jobs use, with the warnings about them."""
    from califlow.params import apply_neuron_size

    gen = cfg["general"]
    if not pooled.ok:
        warning = f"the neuron size could not be measured ({pooled.reason})"
        try:
            used = apply_neuron_size(cfg, pooled.to_dict())["general"]
        except ValueError as exc:  # gSig 'auto' without a measurement: later jobs fail with this message
            return {"gSig": None, "neuron_diameter": None, "warnings": [f"{warning}; {exc}"]}
        return {"gSig": used["gSig"], "neuron_diameter": used["neuron_diameter"], "warnings": [warning]}
    used = apply_neuron_size(cfg, pooled.to_dict())["general"]
    warnings = []
    if gen["gSig"] != "auto":
        msg = size_warning(float(gen["gSig"]), pooled)
        if msg and used["gSig"] != float(gen["gSig"]):
            bound = "floor" if used["gSig"] > float(gen["gSig"]) else "ceiling"
            msg += (f"; every size derived from gSig uses {used['gSig']:g} instead (the {bound} set by the "
                    f"{used['neuron_diameter']:g} px diameter; use gSig: auto, or set general.neuron_diameter)")
        if msg:
            warnings.append(msg)
    return {"gSig": used["gSig"], "neuron_diameter": used["neuron_diameter"], "warnings": warnings}


def write_neuron_size(path: str | os.PathLike, content: Mapping) -> None:
    """Write ``neuron_size.json`` atomically."""
    from califlow.io.store import atomic_output

    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(content, indent=2, default=float) + "\n")


def read_neuron_size(path: str | os.PathLike) -> dict:
    """Read ``neuron_size.json`` (InputError naming the file when it is unreadable)."""
    from califlow.errors import InputError

    p = Path(path)
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: cannot read the neuron size measurement ({exc})") from None


def job_config(config: Mapping, neuron_size_path: str | os.PathLike | None) -> dict:
    """A job's resolved configuration with the animal's measured neuron size applied.

    The warnings of ``neuron_size.json`` are logged (so they appear in every job's log).
    Without a path the configuration is resolved as it is.
    """
    from califlow.params import apply_neuron_size, resolve_config

    if neuron_size_path is None:
        return resolve_config(dict(config))
    content = read_neuron_size(neuron_size_path)
    for w in content.get("warnings", []):
        log.warning("%s", w)
    return apply_neuron_size(dict(config), content.get("measured"))
