# The data stage: the toy corpus, token-frequency bins and the evaluation set V.


if USES_TOY:

    rule toy_corpus:
        output:
            directory("results/data/toy/corpus.zarr"),
        log:
            "results/logs/data/toy_corpus.log",
        benchmark:
            "results/benchmarks/data/toy_corpus.tsv"
        conda:
            "../envs/analysis.yaml"
        params:
            language=section(config, "toy", "language"),
            train_tokens=config["toy"]["train_tokens"],
            heldout_tokens=config["toy"]["heldout_tokens"],
        script:
            "../scripts/toy_corpus.py"


if config["frequency"].get("url"):

    rule fetch_counts:
        output:
            config["frequency"]["path"],
        log:
            "results/logs/data/fetch_counts.log",
        localrule: True
        conda:
            "../envs/analysis.yaml"
        params:
            url=config["frequency"]["url"],
            sha256=config["frequency"]["sha256"],
        script:
            "../scripts/fetch_counts.py"


rule frequency:
    input:
        unpack(frequency_inputs),
    output:
        directory(f"results/data/{FREQ}/frequency.zarr"),
    log:
        f"results/logs/data/frequency_{FREQ}.log",
    benchmark:
        f"results/benchmarks/data/frequency_{FREQ}.tsv"
    conda:
        "../envs/analysis.yaml"
    params:
        frequency=frequency_params(),
    script:
        "../scripts/frequency.py"


rule eval_set:
    input:
        unpack(eval_inputs),
    output:
        directory(f"results/data/{EVAL}/eval.zarr"),
    log:
        f"results/logs/data/eval_{EVAL}.log",
    localrule: True
    conda:
        "../envs/extract.yaml"
    resources:
        hf_download=1,
    params:
        eval=section(config, "eval"),
    script:
        "../scripts/eval_set.py"
