"""A/B of the seeding contrast level: background pixels only (current) vs every pixel (before).

Run::

    python benchmarks/bench_seeding_contrast.py vessel_rich,dense_lowsnr,default

For each preset (3 sessions x 500 frames, seed 3) the workflow's library chain
(:func:`califlow.simulate.pipeline.run_chain`) runs twice on the same animal: once with the
``min_contrast`` level taken over every non-vessel pixel (``background_pnr=None``, the
behaviour before the change) and once as califlow runs it (the level over pixels below
``min_pnr``). Prints detection P/R/F1, median trace r and spike r against the ground truth.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def main(presets: str = "vessel_rich,dense_lowsnr,default") -> None:
    import califlow.cnmfe.seeds as seeds
    from califlow.metrics import score_extraction
    from califlow.simulate import preset, simulate_animal
    from califlow.simulate.pipeline import run_chain

    current = seeds.candidates

    def every_pixel(*a, **k):
        k["background_pnr"] = None
        return current(*a, **k)

    print("command:", " ".join(sys.argv))
    root = Path(tempfile.mkdtemp(prefix="bench_contrast_"))
    for name in presets.split(","):
        animal = simulate_animal(preset(name).replace(n_sessions=3, frames_per_session=500), seed=3)
        for variant, fn in (("every pixel", every_pixel), ("background", current)):
            seeds.candidates = fn
            t = time.perf_counter()
            res = run_chain(animal, root / name / variant.replace(" ", "_"), {}, ingest_dir=root / name / "ingest")
            ex = res["extraction"]
            r = score_extraction(animal.ground_truth, res["A_reference"], ex.C, ex.S, active_est=ex.active,
                                 valid=res["valid_reference"])
            print(f"{name} [{variant}]: n {r['n_est']}/{r['n_true']} P {r['precision']:.3f} R {r['recall']:.3f} "
                  f"F1 {r['f1']:.3f} trace r {r['trace_r']:.3f} spike r {r['spike_r']:.3f} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)
        seeds.candidates = current


if __name__ == "__main__":
    main(*sys.argv[1:2])
