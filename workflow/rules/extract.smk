# Per animal: patched CNMF-E on the aligned movie -> results/{animal}/cnmfe.zarr (cells.csv: cells.smk).
#
# cnmfe.patch_jobs = 0 (default): one job runs every patch (a pool of cnmfe.n_processes
# workers) then stitches and refines. cnmfe.patch_jobs = N > 0: N scatter jobs run the
# patches (patch i in job i mod N, each writing one small .npz), and a gather job stitches,
# refines and writes the outputs. Both give identical results.

CNMFE_JOBS = int(CFG["cnmfe"]["patch_jobs"])


if CNMFE_JOBS > 0:

    rule cnmfe_patches:
        input:
            aligned="results/{animal}/aligned.zarr",
            neuron_size=NEURON_SIZE,
        output:
            temp("results/{animal}/cnmfe_patches/job{job}.npz"),
        params:
            config=group_params("cnmfe", "general"),
            job=lambda wildcards: int(wildcards.job),
            n_jobs=CNMFE_JOBS,
        log:
            "logs/{animal}/cnmfe_patches_{job}.log",
        benchmark:
            "logs/{animal}/cnmfe_patches_{job}.benchmark.tsv"
        wildcard_constraints:
            job=r"\d+",
        resources:
            mem_mb=cnmfe_patch_mem_mb,
        conda:
            "../../envs/califlow.yaml"
        script:
            "../../scripts/cnmfe_patch.py"

    rule cnmfe_gather:
        input:
            aligned="results/{animal}/aligned.zarr",
            neuron_size=NEURON_SIZE,
            patches=expand(
                "results/{{animal}}/cnmfe_patches/job{job}.npz", job=range(CNMFE_JOBS)
            ),
        output:
            cnmfe=directory("results/{animal}/cnmfe.zarr"),
        params:
            config=group_params("cnmfe", "general"),
        log:
            "logs/{animal}/cnmfe_gather.log",
        benchmark:
            "logs/{animal}/cnmfe_gather.benchmark.tsv"
        resources:
            mem_mb=cnmfe_mem_mb,
        conda:
            "../../envs/califlow.yaml"
        script:
            "../../scripts/cnmfe.py"

else:

    rule cnmfe:
        input:
            aligned="results/{animal}/aligned.zarr",
            neuron_size=NEURON_SIZE,
        output:
            cnmfe=directory("results/{animal}/cnmfe.zarr"),
        params:
            config=group_params("cnmfe", "general"),
        log:
            "logs/{animal}/cnmfe.log",
        benchmark:
            "logs/{animal}/cnmfe.benchmark.tsv"
        threads: max(1, int(CFG["cnmfe"]["n_processes"]))
        resources:
            mem_mb=cnmfe_mem_mb,
        conda:
            "../../envs/califlow.yaml"
        script:
            "../../scripts/cnmfe.py"


ANIMAL_TARGETS.append("results/{animal}/cnmfe.zarr")
