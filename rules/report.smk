# The report stage: results/report.html, one self-contained page per run (pipeline/report.py)
# that opens on the run's figures, each beside its caption, with an explorer of the summary
# store. `snakemake --report` writes the provenance report (rule graph, runtimes, code) beside it.


rule report:
    input:
        summary=results("summary.zarr"),
        png=[results(f"figures/{name}.png") for name in FIGURES],
        captions=[f"{workflow.basedir}/{spec.caption}" for spec in FIGURES.values()],
        code=[
            workflow.source_path("../pipeline/report.py"),
            workflow.source_path("../pipeline/report.html"),
        ],
    output:
        results("report.html"),
    log:
        results("logs/report.log"),
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        figures={
            name: {
                "category": spec.category,
                "caption": f"{workflow.basedir}/{spec.caption}",
                "png": results(f"figures/{name}.png"),
            }
            for name, spec in FIGURES.items()
        },
    script:
        "../scripts/report.py"
