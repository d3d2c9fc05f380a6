"""``n3jax-denoise`` on a large photo: wall time and peak resident memory of the whole run.

  python bench/denoise_photo.py --size=4000x3000 --json=bench/results/denoise_photo.json

Makes a noisy photo (scikit-image's astronaut, resized to ``--size``, σ=25 noise, saved as
PNG), runs ``n3jax-denoise`` on it in a fresh process with the official σ=25 weights
(``$N3JAX_PRETRAINED_DIR`` or ``../shared/pretrained``; a tiny untrained model with
``--tiny``) and prints the wall time, the peak RSS of that process and the PSNR before and
after. Colour is denoised channel by channel, so an RGB photo is three gray passes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import machine, write_json  # noqa: E402


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT")
  parser.add_argument("--gray", action="store_true", help="a gray photo instead of RGB")
  parser.add_argument("--tiny", action="store_true", help="a tiny untrained model (no weights)")
  parser.add_argument("--block", type=int, default=None, help="n3jax-denoise --block")
  parser.add_argument("--json", default="", help="also write the figures here")
  args = parser.parse_args()
  width, height = (int(v) for v in args.size.lower().split("x"))
  with tempfile.TemporaryDirectory(prefix="n3jax_photo_") as work:
    return run(args, width, height, work)


def run(args, width: int, height: int, work: str) -> int:
  from PIL import Image
  from skimage import data

  from n3jax import pretrained
  clean = Image.fromarray(data.astronaut()).resize((width, height), Image.BICUBIC)
  clean = np.asarray(clean.convert("L") if args.gray else clean, np.float64)
  rng = np.random.default_rng(0)
  noisy = np.rint(np.clip(clean + 25.0 * rng.standard_normal(clean.shape), 0, 255)).astype(np.uint8)
  path = os.path.join(work, "photo.png")
  Image.fromarray(noisy).save(path)
  env = dict(os.environ)
  env[pretrained.MODEL_DIR_ENV] = os.path.join(work, "models")
  if args.tiny:
    import jax
    import jax.numpy as jnp
    from n3jax.checkpoint import save_model
    from n3jax.nn import create_model
    variables = create_model("n3net_tiny").init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))
    save_model(os.path.join(work, "models", "tiny"), variables, name="n3net_tiny",
               metadata={"sigma": 25, "task": "denoise"})
  elif not pretrained.official_files():
    print("no official weights (set $N3JAX_PRETRAINED_DIR) — or use --tiny", file=sys.stderr)
    return 2
  # The child reports its own high-water mark (VmHWM); ru_maxrss would include ours.
  script = ("import re, sys; from n3jax import denoise; code = denoise.main(sys.argv[1:]);"
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read());"
            "print('PEAK_RSS_KB', hwm.group(1)); sys.exit(code)")
  cmd = [sys.executable, "-c", script, path, "--sigma", "25", "--no-progress"]
  if args.block:
    cmd += ["--block", str(args.block)]
  start = time.perf_counter()
  proc = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
  seconds = time.perf_counter() - start
  print(proc.stdout.split("PEAK_RSS_KB")[0].strip())
  peak_mb = int(proc.stdout.split("PEAK_RSS_KB")[1].split()[0]) / 1024
  out = np.asarray(Image.open(os.path.join(work, "photo_denoised.png")), np.float64)
  psnr = lambda a: float(10 * np.log10(255 ** 2 / np.mean((a - clean) ** 2)))  # noqa: E731
  result = {"size": [width, height], "channels": 1 if args.gray else 3,
            "model": "n3net_tiny (untrained)" if args.tiny else "official σ=25",
            "seconds": seconds, "peak_rss_gib": peak_mb / 1024,
            "psnr_noisy": psnr(noisy.astype(np.float64)), "psnr_denoised": psnr(out),
            "machine": machine()}
  print(f"{width}x{height} {'gray' if args.gray else 'RGB'}, {result['model']}: "
        f"{seconds:.1f} s, peak RSS {peak_mb / 1024:.2f} GiB, PSNR {result['psnr_noisy']:.2f} "
        f"-> {result['psnr_denoised']:.2f} dB")
  write_json(args.json, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())
