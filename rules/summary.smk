# The summary stage: every model's reductions (of its steps and of its update stores), BNSL fits
# and training-loss curve, and the run's provenance, stacked in one dataset (pipeline/summary.py),
# results/summary.zarr, which every figure reads.


rule summary:
    input:
        reduce=expand(results("reduce/{model}.zarr"), model=MODELS),
        fits=expand(results("fits/{model}.json"), model=MODELS),
        updates=expand(results("reduce/{model}_update.zarr"), model=UPDATE_MODELS),
        frequency=frequency_store(),
        eval=eval_store(),
        corpora=sorted({toy_corpus_of(m) for m in TOY_MODELS}),
        train_fits=expand(results("fits/{model}_train.json"), model=TRAIN_CURVE_MODELS),
        train_curves=[PLAN.train_curve(m)[0] for m in TRAIN_CURVE_MODELS],
        seeds=seeds_stores(),
    output:
        directory(results("summary.zarr")),
    log:
        results("logs/summary.log"),
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        models=MODELS,
        updates={m: results(f"reduce/{m}_update.zarr") for m in UPDATE_MODELS},
        corpora={m: toy_corpus_of(m) for m in TOY_MODELS},
        train_fits={
            m: [results(f"fits/{m}_train.json"), *PLAN.train_curve(m)]
            for m in TRAIN_CURVE_MODELS
        },
        provenance=PLAN.provenance(),
        groups={m: PLAN.group(m) for m in MODELS},
    script:
        "../scripts/summary.py"
