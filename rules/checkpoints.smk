# The checkpoints stage: the toy suite is trained here, one job per model, and saved on a
# Pythia-like schedule as Hugging Face model directories results/checkpoints/{model}/step{N}/.
# Hub suites (Pythia, OLMo) will be downloaded here one job per (model, step) (a later issue).


rule train_toy:
    input:
        corpus="results/data/toy/corpus.zarr",
    output:
        expand(
            "results/checkpoints/{{model}}/step{step}/{file}",
            step=toy_schedule(),
            file=["config.json", "model.safetensors"],
        ),
    log:
        "results/logs/checkpoints/train_{model}.log",
    benchmark:
        "results/benchmarks/checkpoints/train_{model}.tsv"
    conda:
        "../envs/extract.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        model=toy_model_spec,
        train=config.get("toy", {}).get("train", {}),
        vocab_size=config.get("toy", {}).get("language", {}).get("vocab_size"),
    script:
        "../scripts/train_toy.py"
