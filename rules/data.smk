# The data stage: the toy corpus, token-frequency bins and the evaluation set V.


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
        language=config.get("toy", {}).get("language", {}),
        train_tokens=config.get("toy", {}).get("train_tokens"),
        heldout_tokens=config.get("toy", {}).get("heldout_tokens"),
    script:
        "../scripts/toy_corpus.py"


rule frequency:
    input:
        corpus="results/data/toy/corpus.zarr",
    output:
        directory(f"results/data/{FREQ}/frequency.zarr"),
    log:
        f"results/logs/data/frequency_{FREQ}.log",
    conda:
        "../envs/analysis.yaml"
    params:
        vocab_size=config.get("toy", {}).get("language", {}).get("vocab_size", 2048),
    script:
        "../scripts/frequency.py"


rule eval_set:
    input:
        corpus="results/data/toy/corpus.zarr",
        frequency=frequency_store(),
    output:
        directory(f"results/data/{EVAL}/eval.zarr"),
    log:
        f"results/logs/data/eval_{EVAL}.log",
    conda:
        "../envs/analysis.yaml"
    params:
        sequences=config["eval"]["sequences"],
        context_length=config["eval"]["context_length"],
    script:
        "../scripts/eval_set.py"
