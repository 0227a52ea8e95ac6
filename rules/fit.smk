# The fit stage: a broken power law (BNSL, Zero-sum learning Eq. 1) fitted to each model's overall
# loss curve with lmfit (pipeline/fit.py), one JSON per model, then one CSV for all models.


rule fit_bnsl:
    input:
        "results/reduce/{model}.zarr",
    output:
        "results/fits/{model}.json",
    log:
        "results/logs/fit/{model}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        fit=section(config, "fit"),
    script:
        "../scripts/fit_bnsl.py"


rule fit_table:
    input:
        expand("results/fits/{model}.json", model=MODELS),
    output:
        "results/fits/bnsl.csv",
    log:
        "results/logs/fit/bnsl.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/fit_table.py"
