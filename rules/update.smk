# The update stage: one job per (model, step) measures one optimizer step from the checkpoint's
# saved state (toy models, OLMo-native suites) or, for suites without optimizer states, the displacement to the next
# listed checkpoint, and writes results/update/{model}/step{step}.zarr (pipeline/update.py).


if UPDATE_DATASETS:

    rule update_batches:
        input:
            unpack(update_batches_inputs),
        output:
            directory(results("data/{dataset}/update.zarr")),
        log:
            results("logs/data/update_batches_{dataset}.log"),
        wildcard_constraints:
            dataset=one_of(UPDATE_DATASETS),
        localrule: True
        conda:
            "../envs/analysis.yaml"
        params:
            data=update_batches_data,
            language=update_batches_language,
            train=lambda w: (
                section(config, "toy", "train")
                if update_batches_data(w)["source"] == "toy"
                else None
            ),
            batches=UPDATE["batches"],
        script:
            "../scripts/update_batches.py"


rule update:
    input:
        unpack(update_inputs),
    output:
        directory(results("update/{model}/step{step}.zarr")),
    log:
        results("logs/update/{model}/step{step}.log"),
    benchmark:
        results("benchmarks/update/{model}/step{step}.tsv")
    conda:
        "../envs/extract.yaml"
    threads: 1
    resources:
        mem_mb=update_mem_mb,
        runtime=extract_runtime,
        gpu=gpus("update"),
    params:
        section=update_params,
        next_step=update_next_step,
        allow_pickle=model_spec("allow_pickle", False),
        max_grad_norm=model_spec("max_grad_norm"),
        schedule=update_schedule,
    script:
        "../scripts/update.py"
