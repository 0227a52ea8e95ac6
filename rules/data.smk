# The data stage: the toy corpus, token-frequency bins and the evaluation set V, in
# results/data/{name}/: the run's own, and one folder per named toy language (toy.languages).


CORPORA = PLAN.corpora

if CORPORA:

    rule toy_corpus:
        output:
            directory(results("data/{corpus}/corpus.zarr")),
        log:
            results("logs/data/{corpus}_corpus.log"),
        benchmark:
            results("benchmarks/data/{corpus}_corpus.tsv")
        wildcard_constraints:
            corpus=one_of(CORPORA),
        conda:
            "../envs/analysis.yaml"
        params:
            language=corpus_language,
            train_tokens=section(config, "toy")["train_tokens"],
            heldout_tokens=section(config, "toy")["heldout_tokens"],
        script:
            "../scripts/toy_corpus.py"


if config["frequency"].get("url"):

    rule fetch_counts:
        output:
            config["frequency"]["path"],
        log:
            results("logs/data/fetch_counts.log"),
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
        directory(results("data/{dataset}/frequency.zarr")),
    log:
        results("logs/data/frequency_{dataset}.log"),
    benchmark:
        results("benchmarks/data/frequency_{dataset}.tsv")
    wildcard_constraints:
        dataset=one_of([FREQ, *LANGUAGES]),
    conda:
        "../envs/analysis.yaml"
    params:
        frequency=frequency_params,
    script:
        "../scripts/frequency.py"


rule eval_set:
    input:
        unpack(eval_inputs),
    output:
        directory(results("data/{dataset}/eval.zarr")),
    log:
        results("logs/data/eval_{dataset}.log"),
    wildcard_constraints:
        dataset=one_of([EVAL, *LANGUAGES]),
    localrule: True
    conda:
        "../envs/extract.yaml"
    resources:
        hf_download=1,
    params:
        eval=eval_params,
    script:
        "../scripts/eval_set.py"
