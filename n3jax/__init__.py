"""n3jax: Neural Nearest Neighbors Networks (Plötz & Roth, NeurIPS 2018) in JAX/Flax.

``n3jax.ops`` is the pure-JAX core (no Flax); ``n3jax.nn`` the Flax modules.
"""

from n3jax import ops

__version__ = "0.1.0"
__all__ = ["ops", "__version__"]
