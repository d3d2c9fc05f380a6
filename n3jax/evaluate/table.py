"""``python -m n3jax.evaluate.table DIR...``: one Markdown table (sets × σ) from eval.py outputs.

Reads each ``DIR/results.json`` written by ``eval.py`` and prints mean PSNR / SSIM per
benchmark (rows) and noise level (columns), with the paper's PSNR where known and the
number of images each mean is over. A mean over fewer images than the published benchmark
holds (an interrupted run, or a data root with part of the set) is marked **partial**.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, Optional, Sequence, Tuple

from n3jax.data.images import DENOISING_SETS

# Paper Table 3 (PSNR, dB), Plötz & Roth 2018.
PAPER_TABLE3 = {
    ("set12", 25): 30.55, ("set12", 50): 27.43, ("set12", 70): 25.90,
    ("bsd68", 25): 29.30, ("bsd68", 50): 26.39, ("bsd68", 70): 25.14,
    ("urban100", 25): 30.19, ("urban100", 50): 26.82, ("urban100", 70): 25.15,
}


def collect(dirs: Sequence[str]) -> Dict[Tuple[str, float], Dict]:
  """``{(dataset, sigma): summary}`` from ``results.json`` files.

  Raises:
    ValueError: naming a file that is not denoising results, or two files that both
      hold one cell.
  """
  cells, where = {}, {}
  for d in dirs:
    path = os.path.join(d, "results.json") if os.path.isdir(d) else d
    try:
      with open(path) as f:
        res = json.load(f)
    except (OSError, ValueError) as e:
      raise ValueError(f"{path}: not readable results ({getattr(e, 'strerror', None) or e})"
                       ) from None
    if not isinstance(res, dict) or "sigma" not in res or not isinstance(
        res.get("datasets"), dict):
      raise ValueError(f"{path} does not hold denoising results of eval.py")
    for name, e in res["datasets"].items():
      key = (name, float(res["sigma"]))
      if key in cells:
        raise ValueError(f"{name} at σ={key[1]:g} is in both {where[key]} and {path}")
      cells[key], where[key] = e, path
  return cells


def image_count(name: str, entry: Dict) -> Tuple[int, int, bool]:
  """``(images measured, images in the benchmark, partial?)`` of one cell."""
  done = int(entry.get("num_done") or 0)
  known = DENOISING_SETS[name].num_images if name in DENOISING_SETS else None
  full = known or int(entry.get("num_images") or 0)
  return done, full, done < full or done < int(entry.get("num_images") or 0)


def markdown(cells: Dict[Tuple[str, float], Dict]) -> str:
  sigmas = sorted({s for _, s in cells})
  names = [n for n in ("set12", "bsd68", "urban100") if any(k[0] == n for k in cells)]
  names += sorted({n for n, _ in cells} - set(names))
  head = "| dataset | " + " | ".join(f"σ={s:g} PSNR / SSIM (paper PSNR)" for s in sigmas) + " |"
  lines = [head, "|" + " --- |" * (len(sigmas) + 1)]
  for n in names:
    row = []
    for s in sigmas:
      e = cells.get((n, s))
      paper = PAPER_TABLE3.get((n, int(s)))
      ref = f" ({paper:.2f})" if paper is not None else ""
      if not e or not e.get("num_done"):
        row.append("—")
        continue
      done, full, partial = image_count(n, e)
      count = f"**partial: {done} of {full} images**" if partial else f"{done} images"
      row.append(f"{e['mean_psnr']:.2f} / {e['mean_ssim']:.4f}{ref}, {count}")
    lines.append(f"| {n} | " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m n3jax.evaluate.table", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("dirs", nargs="+", metavar="DIR",
                      help="eval.py output folders (or their results.json files)")
  args = parser.parse_args(argv)
  try:
    cells = collect(args.dirs)
  except (OSError, ValueError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(markdown(cells), end="")
  return 0


if __name__ == "__main__":
  sys.exit(main())
