# The reduce stage: per model, lazily over all its step stores (pipeline/reduce.py), then all
# models stacked into results/summary.zarr. Revisions with identical weights are reported in
# results/reduce/{model}_duplicates.tsv and handled by the checkpoints.duplicates policy.


rule reduce:
    input:
        extract_stores,
    output:
        store=directory("results/reduce/{model}.zarr"),
        duplicates="results/reduce/{model}_duplicates.tsv",
    log:
        "results/logs/reduce/{model}.log",
    benchmark:
        "results/benchmarks/reduce/{model}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        reduce={**config["reduce"], **config.get("checkpoints", {})},
    script:
        "../scripts/reduce.py"


rule summary:
    input:
        **reduce_stores(),
    output:
        directory("results/summary.zarr"),
    log:
        "results/logs/reduce/summary.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/summary.py"
