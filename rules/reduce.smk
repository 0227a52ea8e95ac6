# The reduce stage: per model, lazily over all its step stores (pipeline/reduce.py), then all
# models stacked into results/summary.zarr.


rule reduce:
    input:
        extract_stores,
    output:
        directory("results/reduce/{model}.zarr"),
    log:
        "results/logs/reduce/{model}.log",
    benchmark:
        "results/benchmarks/reduce/{model}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        reduce=config["reduce"],
    script:
        "../scripts/reduce.py"


rule summary:
    input:
        **reduce_stores(),
    output:
        directory("results/summary.zarr"),
    log:
        "results/logs/reduce/summary.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/summary.py"
