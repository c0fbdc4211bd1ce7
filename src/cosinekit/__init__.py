"""cosinekit: exact, safe and fast cosine similarity for every array-API library.

One source runs on NumPy, PyTorch, JAX, CuPy, Dask and array-api-strict
arrays; results keep the input's library, device and floating dtype.
"""

from ._communities import cosine_communities
from ._contrastive import info_nce_loss, ntxent_loss
from ._losses import cosine_distance_loss, cosine_embedding_loss
from ._negatives import mine_hard_negatives
from ._normalize import l2_normalize
from ._pairwise import pairwise_cosine_distance, pairwise_cosine_similarity
from ._range import cosine_range_search
from ._ranking import cosent_loss, cosine_triplet_loss
from ._search import cosine_topk
from ._similar_pairs import cosine_similar_pairs
from ._similarity import angular_distance, cosine_distance, cosine_similarity

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "angular_distance",
    "cosent_loss",
    "cosine_communities",
    "cosine_distance",
    "cosine_distance_loss",
    "cosine_embedding_loss",
    "cosine_range_search",
    "cosine_similar_pairs",
    "cosine_similarity",
    "cosine_topk",
    "cosine_triplet_loss",
    "info_nce_loss",
    "l2_normalize",
    "mine_hard_negatives",
    "ntxent_loss",
    "pairwise_cosine_distance",
    "pairwise_cosine_similarity",
]
