# Learning-dynamics measurements over suites of training checkpoints.
# The DAG: data → checkpoints → extract, update {model, step} → reduce, reduce_update {model}
# → fit {model} → summary → plots → report.
# See README.md for how to run it, and docs/ for the definitions of what it measures.

from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless a suite is given with --configfile (which then replaces it:
# merged, the two suites' models would mix).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# `snakemake --report results/provenance.html`: the provenance (rule graph, runtimes, code) of
# the run, whose figures and explorer are in its own page, results/report.html (rules/report.smk).
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/checkpoints.smk"
include: "rules/extract.smk"
include: "rules/update.smk"
include: "rules/seeds.smk"
include: "rules/reduce.smk"
include: "rules/fit.smk"
include: "rules/summary.smk"
include: "rules/plots.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_targets(),
