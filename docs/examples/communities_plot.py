"""Draw the communities that cosine_communities finds, on a 2-D projection.

Writes ``docs/_static/communities.png`` for the Mining page: 3,000
embeddings of 48 features around 14 centres (some close to each other,
some clusters wide), their communities at threshold 0.75 with at least 25
members, and the rows in none in grey. The axes are the first two principal
components of the unit vectors. Run ``python docs/examples/communities_plot.py``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen
import numpy as np

import cosinekit as ck

OUTPUT = Path(__file__).resolve().parent.parent / "_static" / "communities.png"


def embeddings(rng: np.random.Generator) -> np.ndarray:
    """Rows around 14 centres, of different spreads, plus a scatter of loners."""
    centres = rng.standard_normal((14, 48))
    centres[7] = centres[6] + 0.6 * rng.standard_normal(48)  # two neighbouring topics
    spread = rng.uniform(0.25, 0.6, 14)
    which = rng.integers(0, 14, 2_800)
    rows = centres[which] + spread[which, None] * rng.standard_normal((2_800, 48))
    loners = rng.standard_normal((200, 48))
    return np.concatenate((rows, loners))


def main() -> None:
    """Find the communities, project, plot, save."""
    rng = np.random.default_rng(7)
    x = embeddings(rng)
    labels = ck.cosine_communities(x, 0.75, min_size=25)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    plane = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    figure, axes = plt.subplots(figsize=(7, 5.5), dpi=110)
    alone = labels < 0
    axes.scatter(*plane[alone].T, s=4, c="lightgrey", label=f"in no community ({alone.sum()})")
    count = int(labels.max()) + 1
    # tab20 without its two greys (the rows in no community are grey).
    palette = [plt.get_cmap("tab20")(i) for i in range(20) if i not in (14, 15)]
    for c in range(count):
        members = labels == c
        colour = palette[c % len(palette)]
        axes.scatter(*plane[members].T, s=5, color=colour, label=f"{c}: {members.sum()} rows")
    axes.set_title("cosine_communities(x, 0.75, min_size=25) on 3,000 x 48 rows")
    axes.set_xlabel("first principal component of the unit rows")
    axes.set_ylabel("second principal component")
    axes.legend(fontsize=7, markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    figure.savefig(OUTPUT)
    print(f"{count} communities, {alone.sum()} rows in none; wrote {OUTPUT}")


if __name__ == "__main__":
    main()
