# The seeds stage: one job per (group, step) compares the predictive distributions of a group's
# models (the seeds of one setting, models.{name}.seeds) at every evaluation token and writes
# results/seeds/{group}/step{step}.zarr (pipeline/seeds.py); the summary reduces it per bin.


rule seeds:
    input:
        configs=group_checkpoint_configs,
        eval=group_eval_store,
    output:
        directory(results("seeds/{group}/step{step}.zarr")),
    log:
        results("logs/seeds/{group}/step{step}.log"),
    benchmark:
        results("benchmarks/seeds/{group}/step{step}.tsv")
    conda:
        "../envs/extract.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        models=lambda w: SEED_GROUPS[w.group],
    script:
        "../scripts/seeds.py"
