"""Sphinx configuration for the cosinekit documentation."""

from __future__ import annotations

import inspect
import re

from docutils import nodes
from sphinx.application import Sphinx

import cosinekit

project = "cosinekit"
author = "cosinekit developers"
copyright = "cosinekit developers"
release = cosinekit.__version__
version = release

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    # The tutorials' examples run in the build and their figures land in it.
    "matplotlib.sphinxext.plot_directive",
]

source_suffix = {".md": "markdown"}
# _generated: the tables benchmarks/figures.py writes, included by the performance page.
exclude_patterns = ["_build", "_generated"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"cosinekit {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]

# The tutorials write their examples as doctests inside ``plot`` directives:
# the docs session's pytest checks their output, the build runs them and
# shows the figures they draw. The code is shown; the links to it are not.
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
# Figures 7.5 inches wide fill the content column with their text at its
# size; 150 dpi keeps them sharp on high-density screens.
plot_formats = [("png", 150)]
plot_rcparams = {"font.size": 10}

# The numpydoc docstrings document every parameter; the signature alone is
# enough in the summary tables.
autosummary_generate = False
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
# Docstrings cite the peers' functions as ``literal`` text, not as links.
default_role = "py:obj"

# The API page is built from ``cosinekit.__all__`` at build time, so a public
# function can never be missing from it. These groups only order the page;
# a name in ``__all__`` that no group lists lands under "More".
API_GROUPS: dict[str, list[str]] = {
    "Vector normalization": ["l2_normalize"],
    "Row-wise similarity and distances": [
        "cosine_similarity",
        "cosine_distance",
        "angular_distance",
    ],
    "Losses": ["cosine_distance_loss", "cosine_embedding_loss"],
    "Contrastive losses": ["info_nce_loss", "ntxent_loss", "cosent_loss", "cosine_triplet_loss"],
    "Pairwise similarity and search": [
        "pairwise_cosine_similarity",
        "pairwise_cosine_distance",
        "cosine_topk",
        "cosine_range_search",
    ],
    "Mining": ["cosine_similar_pairs", "cosine_communities", "mine_hard_negatives"],
}


def _public_functions() -> list[str]:
    return [name for name in cosinekit.__all__ if not name.startswith("_")]


def _api_reference() -> str:
    public = _public_functions()
    grouped = [name for names in API_GROUPS.values() for name in names]
    groups = {title: [n for n in names if n in public] for title, names in API_GROUPS.items()}
    groups["More"] = [name for name in public if name not in grouped]
    lines = []
    for title, names in groups.items():
        if not names:
            continue
        lines += [f"## {title}", "", "```{eval-rst}", ".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   cosinekit.{name}" for name in names]
        lines += ["```", ""]
        for name in names:
            lines += ["```{eval-rst}", f".. autofunction:: cosinekit.{name}", "```", ""]
    lines += _backend_modules_reference()
    return "\n".join(lines)


def _backend_modules_reference() -> list[str]:
    """The sections of ``cosinekit.torch`` and ``cosinekit.jax``, from their ``__all__``."""
    import cosinekit.jax
    import cosinekit.torch

    lines = []
    for title, module in (
        ("PyTorch: `cosinekit.torch`", cosinekit.torch),
        ("JAX helpers: `cosinekit.jax`", cosinekit.jax),
    ):
        name = module.__name__
        lines += [f"## {title}", "", module.__doc__.splitlines()[0], ""]
        lines += ["```{eval-rst}", ".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {name}.{member}" for member in module.__all__]
        lines += ["```", ""]
        for member in module.__all__:
            kind = "autoclass" if inspect.isclass(getattr(module, member)) else "autofunction"
            lines += ["```{eval-rst}", f".. {kind}:: {name}.{member}", "```", ""]
    return lines


BACKEND_TITLES = {
    "numpy": "NumPy",
    "torch": "PyTorch",
    "jax": "JAX",
    "cupy": "CuPy",
    "dask": "Dask",
    "array_api_strict": "array-api-strict",
}


def _capabilities_table() -> str:
    """The backends table, from the one capability table of the package.

    One column for the eager libraries (``all``, or the ones that apply),
    one for Dask: ten columns did not fit the page.
    """
    from cosinekit._lib._capabilities import CAPABILITIES, Dask, Shape

    eager = {key: title for key, title in BACKEND_TITLES.items() if key != "dask"}
    header = [
        "function",
        ", ".join(eager.values()),
        "Dask",
        "`jit`, `torch.compile`",
        "on a GPU",
        "gradients with respect to",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, found in CAPABILITIES.items():
        present = [title for key, title in eager.items() if key in found.backends]
        libraries = "all" if len(present) == len(eager) else ", ".join(present) or "none"
        dask = found.dask.value if "dask" in found.backends else Dask.NONE.value
        traced = "yes" if found.shape is Shape.FIXED else "eager only"
        gpu = "no host sync" if found.shape is Shape.FIXED else "reads its result size"
        gradients = ", ".join(f"`{a}`" for a in found.differentiable) or "none"
        cells = [f"`{name}`", libraries, dask, traced, gpu, gradients]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fill_api_page(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname == "api":
        source[0] = source[0].replace("<!-- api-reference -->", _api_reference())
    if docname == "backends":
        source[0] = source[0].replace("<!-- capabilities -->", _capabilities_table())


def _wrappable_literals(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """Long literals in table cells may wrap after a dot, an underscore or a comma.

    A signature or a peer's dotted name in a table cell is wider than the
    cell, and a literal never wraps, so the table ran past the page. An HTML
    ``<wbr>`` after each ``.``, ``_``, ``,`` and ``(`` lets the browser break
    there (and only there); copying the text copies no extra character.
    """
    for literal in list(doctree.findall(nodes.literal)):
        if len(literal.astext()) < 10 or not _in_table(literal):
            continue
        pieces = re.split(r"(?<=[._,(])(?=.)", literal.astext())
        children: list[nodes.Node] = [nodes.Text(pieces[0])]
        for piece in pieces[1:]:
            children += [nodes.raw("", "<wbr>", format="html"), nodes.Text(piece)]
        literal.children = []
        literal.extend(children)


def _in_table(node: nodes.Node) -> bool:
    while node.parent is not None:
        node = node.parent
        if isinstance(node, nodes.entry):
            return True
    return False


def setup(app: Sphinx) -> dict[str, bool]:
    """Register the hooks: the API reference from ``__all__``, wrappable table literals."""
    app.connect("source-read", _fill_api_page)
    app.connect("doctree-resolved", _wrappable_literals)
    return {"parallel_read_safe": True}
