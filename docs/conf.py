"""Sphinx configuration of the kernelkip documentation site.

Build (warnings are errors; ``tests/test_docs.py`` runs the same build)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Needs the ``docs`` extra: ``pip install -e .[docs]``.
"""
import os
import sys

# the checkout's package, also when kernelkip is not installed into the environment
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import kernelkip  # noqa: E402

project = "kernelkip"
author = "kernelkip developers"
copyright = "2026, kernelkip developers"
version = release = kernelkip.__version__

extensions = [
    "myst_parser",              # docs/*.md and docs/math/*.md
    "numpydoc",                 # the docstrings' Parameters / Returns / ... sections
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",   # one page per public object (docs/api/generated/)
    "sphinx.ext.mathjax",       # $...$, $$...$$ \tag{..}, .. math::
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_templates", "Thumbs.db", ".DS_Store"]
# _templates/autosummary/class.rst: a class page documents its methods in place
templates_path = ["_templates"]

# -- MyST ------------------------------------------------------------------------------------
# dollarmath: $...$ and $$...$$ (with \tag{fc.1}) as in docs/math/*.md;
# amsmath: top-level \begin{equation} / align environments passed to MathJax unwrapped
myst_enable_extensions = ["dollarmath", "amsmath"]

# -- autodoc / autosummary / numpydoc --------------------------------------------------------
autosummary_generate = True
# kk.Serial / kk.serial, objectives.KIP / kip and RFAD / rfad differ only in case: give the
# classes their own file names so the stubs do not overwrite each other on case-insensitive
# file systems (macOS, Windows)
autosummary_filename_map = {
    "kernelkip.Serial": "kernelkip.Serial-class",
    "kernelkip.objectives.KIP": "kernelkip.objectives.KIP-class",
    "kernelkip.objectives.RFAD": "kernelkip.objectives.RFAD-class",
}
autodoc_typehints = "none"           # the numpydoc sections carry the types
# the class template documents the methods (autodoc :members:); numpydoc's member tables would
# list them a second time
numpydoc_show_class_members = False

# -- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"kernelkip {release}"
html_theme_options = {"show_toc_level": 2}
