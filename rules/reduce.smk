# The reduce stage: per model, lazily over all its step stores, one step at a time
# (pipeline/reduce.py). Revisions with identical weights are reported in
# results/reduce/{model}_duplicates.tsv and handled by the checkpoints.duplicates policy. A
# model's update stores are reduced over steps apart, into results/reduce/{model}_update.zarr.


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
        reduce=section(config, "reduce"),
        checkpoints=section(config, "checkpoints"),
    script:
        "../scripts/reduce.py"


rule reduce_update:
    input:
        lambda wildcards: update_stores(wildcards.model),
    output:
        directory(results("reduce/{model}_update.zarr")),
    log:
        results("logs/reduce/{model}_update.log"),
    benchmark:
        results("benchmarks/reduce/{model}_update.tsv")
    wildcard_constraints:
        model=one_of(UPDATE_MODELS),
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/reduce_update.py"
