"""The toy suite, in one place: the embedded default's language, models and training.

* ``language``: the synthetic Zipfian language (a sparse second-order Markov chain) and its
  training and held-out streams (numpy).
* ``schedule``: the toy models' shapes, the training settings and the Pythia-like checkpoint
  schedule (no heavy imports: the workflow's DAG is built from them).
* ``training``: building and training the GPT-NeoX models (torch), yielding each checkpoint.

The workflow's stages use them like any other source: ``pipeline.data`` writes the corpus and
the evaluation set from the language, ``pipeline.checkpoints`` saves the trained checkpoints in
the Hugging Face format, and from there on a toy checkpoint is treated like a downloaded one.
"""
