"""Pure JAX core of N³Net and NLRN (no Flax): distances, continuous kNN, patches and
windows, confined (windowed) attention.

The search-window rules and receptive radii are in :mod:`n3jax.ops.geometry`.

Every op takes any number of leading (batch) axes, none included, so it works on
unbatched input and under ``jax.vmap``; shapes are written ``[..., core]`` in the
docstrings. Optional arguments are keyword-only.
"""

from n3jax.ops.attention import local_attention
from n3jax.ops.blockwise import (block_aggregate_sum, block_cover_counts, block_sq_distances,
                                 from_blocks, to_blocks)
from n3jax.ops.distances import gather_candidates, indexed_sq_distances, pairwise_sq_distances
from n3jax.ops.geometry import (conv_radius, n3block_radius, n3block_runnable_size,
                                num_candidates, tile_regions, window_candidates,
                                window_indices, window_start)
from n3jax.ops.knn import (LOG1MEXP_GRAD_EPS, aggregate, check_temperature,
                           concrete_knn_weights, continuous_knn_weights, exclude_self_mask,
                           hard_knn_weights, log1mexp, neural_nearest_neighbors)
from n3jax.ops.windowed import windowed_aggregate, windowed_sq_distances
from n3jax.ops.patches import (crop_patch_padding, extract_patches, fold_patches, grid_size,
                               pad_for_patches, patch_padding)

__all__ = [
    "local_attention", "block_aggregate_sum", "block_cover_counts", "block_sq_distances", "from_blocks",
    "to_blocks", "gather_candidates", "indexed_sq_distances", "pairwise_sq_distances",
    "LOG1MEXP_GRAD_EPS", "aggregate", "check_temperature", "concrete_knn_weights",
    "continuous_knn_weights", "exclude_self_mask", "hard_knn_weights", "log1mexp",
    "neural_nearest_neighbors", "crop_patch_padding", "extract_patches", "fold_patches",
    "grid_size", "num_candidates", "windowed_aggregate", "windowed_sq_distances",
    "pad_for_patches", "patch_padding", "window_indices", "window_start", "window_candidates",
    "tile_regions", "conv_radius", "n3block_radius", "n3block_runnable_size",
]
