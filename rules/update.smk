# The update stage: one job per (model, step) measures one optimizer step from the checkpoint's
# saved state (toy models) or, for suites without optimizer states, the displacement to the next
# listed checkpoint, and writes results/update/{model}/step{step}.zarr (pipeline/update.py).


if UPDATE_BATCHES:

    rule update_batches:
        input:
            frequency=frequency_store(),
        output:
            directory(UPDATE_BATCHES),
        log:
            "results/logs/data/update_batches.log",
        localrule: True
        conda:
            "../envs/analysis.yaml"
        params:
            language=section(config, "toy", "language"),
            train=section(config, "toy", "train"),
            batches=section(config, "update")["batches"],
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
