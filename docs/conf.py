"""Sphinx configuration: the API reference from the docstrings (numpydoc), the guide from
the README and the pages beside this file (MyST Markdown).  Built in CI with warnings
as errors: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``."""

import convmm

project = "convmm"
author = "the convmm developers"
copyright = "2026, the convmm developers"
release = version = convmm.__version__

extensions = ["sphinx.ext.autodoc", "numpydoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]

# Signatures without the type hints: each parameter's type is in its numpydoc entry, and
# the hints (for type checkers) would spell out convmm's aliases in every signature.
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"convmm {release}"
