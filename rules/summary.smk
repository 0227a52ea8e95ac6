# The summary stage: every model's reduction and BNSL fit, and the run's provenance, in one
# dataset (pipeline/summary.py), results/summary.zarr, which every figure reads.


rule summary:
    input:
        reduce=expand("results/reduce/{model}.zarr", model=MODELS),
        fits=expand("results/fits/{model}.json", model=MODELS),
    output:
        directory("results/summary.zarr"),
    log:
        "results/logs/summary.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        models=MODELS,
        provenance=summary_provenance(),
    script:
        "../scripts/summary.py"
