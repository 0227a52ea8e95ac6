# The update stage: one job per (model, step) measures one optimizer step from the checkpoint's
# saved state (toy models, OLMo-native suites) or, for suites without optimizer states, the displacement to the next
# listed checkpoint, and writes results/update/{model}/step{step}.zarr (pipeline/update.py).


if UPDATE_BATCHES:

    rule update_batches:
        input:
            unpack(update_batches_inputs),
        output:
            directory(UPDATE_BATCHES),
        log:
            "results/logs/data/update_batches.log",
        localrule: True
        conda:
            "../envs/analysis.yaml"
        params:
            data=UPDATE_DATA,
            language=(
                section(config, "toy", "language")
                if UPDATE_DATA["source"] == "toy"
                else None
            ),
            train=(
                section(config, "toy", "train")
                if UPDATE_DATA["source"] == "toy"
                else None
            ),
            batches=UPDATE["batches"],
        script:
            "../scripts/update_batches.py"


rule update:
    input:
        unpack(update_inputs),
    output:
        directory("results/update/{model}/step{step}.zarr"),
    log:
        "results/logs/update/{model}/step{step}.log",
    benchmark:
        "results/benchmarks/update/{model}/step{step}.tsv"
    conda:
        "../envs/extract.yaml"
    threads: 1
    resources:
        mem_mb=update_mem_mb,
        runtime=extract_runtime,
        gpu=extract_gpus,
    params:
        section=update_params,
        next_step=lambda w: next_step(w.model, int(w.step)),
    script:
        "../scripts/update.py"
