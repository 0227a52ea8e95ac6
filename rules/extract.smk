# The extract stage: one job per (model, step) measures every evaluation token of one checkpoint
# and writes results/extract/{model}/step{step}.zarr (pipeline/extract.py).


rule extract:
    input:
        unpack(checkpoint_files),
        eval=eval_store(),
    output:
        directory("results/extract/{model}/step{step}.zarr"),
    log:
        "results/logs/extract/{model}/step{step}.log",
    benchmark:
        "results/benchmarks/extract/{model}/step{step}.tsv"
    conda:
        "../envs/extract.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        extract=config["extract"],
    script:
        "../scripts/extract.py"
