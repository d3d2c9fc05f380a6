"""``n3jax-convert FILE (--out DIR | --install)``: official N³Net weights → an n3jax model.

  n3jax-convert 051_ckpt.t7 --install          # into the per-user model folder
  n3jax-convert n3net_gauss_sigma25.t7 --out ckpt/sigma25

The file is the authors' legacy PyTorch checkpoint (``.t7``); it is parsed without
PyTorch and without running any code from it. The model is read from its names and
shapes: the Gaussian denoisers, or the real-noise (Poisson-Gaussian) model, whose input
has a noise map. A Gaussian model's σ is recognised from its sha256 (or a ``sigma25`` in
its path, or ``--sigma``). ``--install`` writes to ``$N3JAX_MODEL_DIR`` (default
``~/.local/share/n3jax/models``) as ``n3net-gauss-sigma25`` (or ``n3net-pg``), where
``n3jax-denoise``, the demo and the notebook find it. An existing non-empty
destination is kept unless ``--overwrite`` is given; the model is written atomically.
"""

import argparse
import os
import sys

from n3jax import pretrained
from n3jax.cli_errors import one_line_errors
from n3jax.atomic import OutputExistsError
from n3jax.checkpoint import MODEL_SPEC_FILE, save_model
from n3jax.data.noise import check_sigma
from n3jax.convert.n3net import convert_official
from n3jax.convert.torch_legacy import CorruptCheckpointError, UnsafeCheckpointError


def _sigma(text: str) -> float:
  try:
    return check_sigma(text, name="--sigma")
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e).replace("--sigma ", "", 1)) from None


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="n3jax-convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("checkpoint", help="official N³Net file (legacy PyTorch format, .t7)")
  where = parser.add_mutually_exclusive_group(required=True)
  where.add_argument("--out", help="directory to write the n3jax model to")
  where.add_argument("--install", action="store_true",
                     help=f"write to the model folder ({pretrained.model_dir()})")
  parser.add_argument("--sigma", type=_sigma,
                      help="noise level the weights were trained for, when the file does not tell")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace an existing non-empty destination")
  parser.add_argument("--debug", action="store_true", help="full tracebacks on errors")
  args = parser.parse_args(argv)
  return one_line_errors(lambda _: _convert(args), [], debug=args.debug)


def _convert(args: argparse.Namespace) -> int:
  try:
    variables, metadata = convert_official(args.checkpoint)
  except (UnsafeCheckpointError, CorruptCheckpointError, ValueError) as e:
    if args.debug:
      raise
    print(f"error: {e}", file=sys.stderr)  # names the file
    return 1
  except OSError as e:
    print(f"error: {args.checkpoint}: {e.strerror or e}", file=sys.stderr)
    return 1
  name, kwargs = metadata.pop("model_name"), metadata.pop("model_kwargs")
  if args.sigma is not None and metadata["task"] != "denoise":
    print(f"error: {args.checkpoint} holds a Poisson-Gaussian model ({name}): it takes noise "
          "parameters a and b, not --sigma", file=sys.stderr)
    return 1
  if args.sigma is not None:
    if metadata["sigma"] is not None and float(metadata["sigma"]) != args.sigma:
      print(f"error: {args.checkpoint} is the official σ={metadata['sigma']} checkpoint, "
            f"not σ={args.sigma:g}", file=sys.stderr)
      return 1
    metadata["sigma"] = args.sigma
  if args.install and metadata["task"] != "denoise":
    out = os.path.join(pretrained.model_dir(), pretrained.INSTALLED_PG)
  elif args.install:
    if metadata["sigma"] is None:
      print(f"error: cannot tell which σ {args.checkpoint} was trained for; pass --sigma",
            file=sys.stderr)
      return 1
    out = os.path.join(pretrained.model_dir(), pretrained.installed_name(float(metadata["sigma"])))
  else:
    out = args.out
  if (args.overwrite and os.path.isdir(out) and os.listdir(out)
      and not os.path.isfile(os.path.join(out, MODEL_SPEC_FILE))):
    print(f"error: {out} holds files that are not an n3jax model; --overwrite replaces only "
          "model folders. Choose another --out.", file=sys.stderr)
    return 1
  try:
    save_model(out, variables, name=name, kwargs=kwargs, metadata=metadata,
               overwrite=args.overwrite)
  except OutputExistsError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except OSError as e:  # e.g. a parent that is a file, or a folder not writable
    print(f"error: --out {out}: cannot write there ({e.strerror or e})", file=sys.stderr)
    return 1
  if metadata["task"] == "denoise" and not metadata["official"]:
    print("warning: sha256 does not match any official N³Net checkpoint", file=sys.stderr)
  what = (f"sigma={metadata['sigma']}" if metadata["task"] == "denoise" else
          "Poisson-Gaussian noise, input: image + noise map a, b")
  print(f"wrote {out} (model {name}, {what}, sha256 {metadata['sha256'][:12]}…)")
  return 0


def run() -> None:
  """Console-script entry point (exits)."""
  sys.exit(main())


if __name__ == "__main__":
  run()
