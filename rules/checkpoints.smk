# The checkpoints stage: results/checkpoints/{model}/step{N}/ is a checkpoint directory, trained
# here for the toy suite (one job per model, every saved step at once), linked into the shared
# hub cache for hub suites (one download job per (model, step)) or to a local run's directory.


if TOY_MODELS:

    rule train_toy:
        input:
            corpus=toy_corpus,
        output:
            expand(
                results("checkpoints/{{model}}/step{step}/{file}"),
                step=toy_schedule(),
                file=[
                    "config.json",
                    "model.safetensors",
                    "optimizer.json",
                    "optimizer.safetensors",
                ],
            ),
            results("checkpoints/{model}/train_loss.tsv"),
        log:
            results("logs/checkpoints/train_{model}.log"),
        benchmark:
            results("benchmarks/checkpoints/train_{model}.tsv")
        wildcard_constraints:
            model=one_of(TOY_MODELS),
        # first: every later job of the suite waits for its model's training, and the largest
        # model trains longest, so starting it late leaves the other cores idle at the end
        priority: 50
        conda:
            "../envs/extract.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=60,
        params:
            model=toy_model_spec,
            train=lambda w: PLAN.toy_train(w.model),
            vocab_size=lambda w: toy_vocab_size(w.model),
        script:
            "../scripts/train_toy.py"


rule download:
    output:
        config=results("checkpoints/{model}/step{step}/config.json"),
    log:
        results("logs/checkpoints/download_{model}_step{step}.log"),
    wildcard_constraints:
        model=one_of(HUB_MODELS),
    localrule: True
    conda:
        "../envs/extract.yaml"
    resources:
        hf_download=1,
        runtime=60,
    params:
        repo_id=model_spec("repo_id"),
        revision=hub_revision,
        subfolder=hub_subfolder,
        allow_pickle=model_spec("allow_pickle", False),
        format=model_format,
    script:
        "../scripts/download.py"


# A local run's checkpoints (source: local) are linked where they lie; no input on the source,
# so that a checkpoint deleted (or rotated by save_total_limit) after it was linked re-runs
# nothing.
rule link_local:
    output:
        config=results("checkpoints/{model}/step{step}/config.json"),
    log:
        results("logs/checkpoints/link_{model}_step{step}.log"),
    wildcard_constraints:
        model=one_of(LOCAL_MODELS),
    localrule: True
    conda:
        "../envs/extract.yaml"
    params:
        path=local_path,
        allow_pickle=model_spec("allow_pickle", False),
        format=model_format,
    script:
        "../scripts/link_local.py"
