# The fit stage: a broken power law (BNSL, Zero-sum learning Eq. 1) fitted with lmfit
# (pipeline/fit.py) to each model's overall evaluation loss at the checkpoints and, where the
# model has one, its training loss at every step; one JSON per (model, curve), then one CSV.


rule fit_bnsl:
    input:
        results("reduce/{model}.zarr"),
    output:
        results("fits/{model}.json"),
    log:
        results("logs/fit/{model}.log"),
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        fit=fit_params("eval"),
    script:
        "../scripts/fit_bnsl.py"


rule fit_bnsl_train:
    input:
        curve=train_curve,
    output:
        results("fits/{model}_train.json"),
    log:
        results("logs/fit/{model}_train.log"),
    wildcard_constraints:
        model=one_of(TRAIN_CURVE_MODELS),
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        fit=fit_params("train"),
        reader=train_curve_format,
    script:
        "../scripts/fit_bnsl.py"


rule fit_table:
    input:
        expand(results("fits/{model}.json"), model=MODELS),
        expand(results("fits/{model}_train.json"), model=TRAIN_CURVE_MODELS),
    output:
        results("fits/bnsl.csv"),
    log:
        results("logs/fit/bnsl.log"),
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/fit_table.py"
