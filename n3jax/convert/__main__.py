"""``python -m n3jax.convert n3net_gauss_sigma25.t7 --out DIR``: official weights → n3jax."""

import argparse
import sys

from n3jax.checkpoint import save_model
from n3jax.convert.n3net import convert_official
from n3jax.convert.torch_legacy import CorruptCheckpointError, UnsafeCheckpointError


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m n3jax.convert", description=__doc__)
  parser.add_argument("checkpoint", help="official N³Net file (legacy PyTorch format, .t7)")
  parser.add_argument("--out", required=True, help="directory to write the n3jax model to")
  args = parser.parse_args(argv)
  try:
    variables, metadata = convert_official(args.checkpoint)
  except (UnsafeCheckpointError, CorruptCheckpointError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  save_model(args.out, variables, name="n3net", metadata=metadata)
  if not metadata["official"]:
    print("warning: sha256 does not match any official N³Net checkpoint", file=sys.stderr)
  print(f"wrote {args.out} (model n3net, sigma={metadata['sigma']}, sha256 {metadata['sha256'][:12]}…)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
