"""Ground-truth generator: multi-session one-photon movies of simulated animals and cohorts.

Quick start::

    from califlow.simulate import preset, simulate_animal, write_animal
    animal = simulate_animal(preset("demo"), seed=1)
    frames = animal.session_frames(0, 0, 100)          # (100, H, W) uint8
    gt = animal.ground_truth                            # footprints, C, S, motion, maps, ...
    write_animal(animal, "out/animal01")                # Miniscope V4 folders

See :mod:`califlow.simulate.animal` for the image model and
:mod:`califlow.simulate.groundtruth` for every ground-truth array and its convention.
"""

from califlow.simulate.animal import BLOCK, SimulatedAnimal, simulate_animal
from califlow.simulate.config import PRESETS, SimulationConfig, preset
from califlow.simulate.groundtruth import GroundTruth, load_ground_truth, save_ground_truth
from califlow.simulate.writers import animal_seed, write_animal, write_cohort

__all__ = [
    "SimulationConfig",
    "PRESETS",
    "preset",
    "simulate_animal",
    "SimulatedAnimal",
    "GroundTruth",
    "save_ground_truth",
    "load_ground_truth",
    "write_animal",
    "write_cohort",
    "animal_seed",
    "BLOCK",
]
