# The reduce stage: per model, lazily over all its step stores, one step at a time
# (pipeline/reduce.py). Revisions with identical weights are reported in
# results/reduce/{model}_duplicates.tsv and handled by the checkpoints.duplicates policy.


rule reduce:
    input:
        extract_stores,
    output:
        store=directory(results("reduce/{model}.zarr")),
        duplicates=results("reduce/{model}_duplicates.tsv"),
    log:
        results("logs/reduce/{model}.log"),
    benchmark:
        results("benchmarks/reduce/{model}.tsv")
    conda:
        "../envs/analysis.yaml"
    params:
        reduce={**section(config, "reduce"), **section(config, "checkpoints")},
    script:
        "../scripts/reduce.py"
