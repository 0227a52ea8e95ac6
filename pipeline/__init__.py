"""Learning-dynamics measurements over suites of training checkpoints.

One module per stage of the workflow (``data``, ``checkpoints``, ``extract``, ``reduce``,
``fit``, ``plots``), named like its rule file and its ``results/`` folder; the pure maths
(``decomposition``, ``saturation``) lives in modules that do no I/O.
"""

__version__ = "0.1.0"
