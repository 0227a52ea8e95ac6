"""Sphinx configuration of the documentation site (``make docs``: docs/_build/html).

Pages are MyST Markdown; warnings are errors (``-W`` in the Makefile), so a broken
cross-reference or a missing image fails the build. The generated blocks (tables of stored
variables and configuration keys, the figure pages' headers, the numbers of the default run)
are written by ``python -m pipeline.tables`` and checked by the tests.
"""

project = "Learning dynamics over checkpoint suites"
author = "The project's authors"
copyright = "2026, the project's authors"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "notebooks/.ipynb_checkpoints"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = "Learning dynamics over checkpoint suites"
html_static_path = ["_static"]
html_show_sourcelink = False
