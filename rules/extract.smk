# The extract stage: one job per (model, step) measures every evaluation token of one checkpoint
# and writes results/extract/{model}/step{step}.zarr (pipeline/extract.py).


rule extract:
    input:
        unpack(checkpoint_files),
        eval=eval_store(),
    output:
        directory("results/extract/{model}/step{step}.zarr"),
    params:
        extract=config["extract"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        "results/logs/extract/{model}/step{step}.log",
    benchmark:
        "results/benchmarks/extract/{model}/step{step}.tsv"
    conda:
        "../envs/extract.yaml"
    script:
        "../scripts/extract.py"
