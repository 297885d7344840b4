"""Simulated cohorts shared by several test modules."""

from __future__ import annotations

from califlow.simulate import preset, simulate_animal


def moving_animal(size: int, frames: int, jump_max: float, n_jumps: int, seed: int):
    """Default preset, 2 sessions of ``size`` x ``size`` px, AR(1) motion of std 2 px plus
    ``n_jumps`` jumps of up to ``jump_max`` px (the motion benchmark's)."""
    cfg = preset("default", height=size, width=size, n_sessions=2, frames_per_session=frames,
                 motion_std=2.0, jump_max=jump_max, n_jumps=n_jumps)
    return simulate_animal(cfg, seed=seed)
