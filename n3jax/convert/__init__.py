"""Reading the official N³Net checkpoints safely and converting them to n3jax."""

from n3jax.convert.n3net import (convert_official, key_mapping, load_official,
                                 release_architecture, state_dict_to_variables)
from n3jax.convert.torch_legacy import (CorruptCheckpointError, UnsafeCheckpointError,
                                        load_legacy_checkpoint)

__all__ = ["convert_official", "key_mapping", "load_official", "release_architecture",
           "state_dict_to_variables",
           "CorruptCheckpointError", "UnsafeCheckpointError", "load_legacy_checkpoint"]
