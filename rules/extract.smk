# The extract stage: one job per (model, step) measures every evaluation token of one checkpoint
# and writes results/extract/{model}/step{step}.zarr (pipeline/extract.py). Memory, runtime and
# the GPU request follow the model's size (rules/common.smk).


rule extract:
    input:
        config=checkpoint_config,
        eval=model_eval_store,
    output:
        directory(results("extract/{model}/step{step}.zarr")),
    log:
        results("logs/extract/{model}/step{step}.log"),
    benchmark:
        results("benchmarks/extract/{model}/step{step}.tsv")
    conda:
        "../envs/extract.yaml"
    threads: 1
    resources:
        mem_mb=extract_mem_mb,
        runtime=extract_runtime,
        gpu=gpus("extract"),
    params:
        extract=PLAN.extract_params(),
        allow_pickle=model_spec("allow_pickle", False),
        revision=hub_revision,
    script:
        "../scripts/extract.py"
