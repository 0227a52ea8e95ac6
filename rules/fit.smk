# The fit stage: broken-power-law (BNSL) fits of each model's loss curve with lmfit, written to
# results/fits/bnsl.csv.
#
# STUB: filled by the issue "Reductions and fits, out-of-core" (see the README's status table).
# It has no rules yet, so `rule all` does not ask for results/fits/.
