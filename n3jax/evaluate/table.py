"""``python -m n3jax.evaluate.table DIR...``: one Markdown table (sets × σ) from eval.py outputs.

Reads each ``DIR/results.json`` written by ``eval.py`` and prints mean PSNR / SSIM per
benchmark (rows) and noise level (columns), with the paper's PSNR where known.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, Optional, Sequence, Tuple

# Paper Table 3 (PSNR, dB), Plötz & Roth 2018.
PAPER_TABLE3 = {
    ("set12", 25): 30.55, ("set12", 50): 27.43, ("set12", 70): 25.90,
    ("bsd68", 25): 29.30, ("bsd68", 50): 26.39, ("bsd68", 70): 25.14,
    ("urban100", 25): 30.19, ("urban100", 50): 26.82, ("urban100", 70): 25.15,
}


def collect(dirs: Sequence[str]) -> Dict[Tuple[str, float], Dict]:
  """``{(dataset, sigma): summary}`` from ``results.json`` files; complete sets only."""
  cells = {}
  for d in dirs:
    path = os.path.join(d, "results.json") if os.path.isdir(d) else d
    with open(path) as f:
      res = json.load(f)
    for name, e in res["datasets"].items():
      if e.get("num_done") == e.get("num_images"):
        cells[(name, float(res["sigma"]))] = e
  return cells


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
      row.append(f"{e['mean_psnr']:.2f} / {e['mean_ssim']:.4f}{ref}" if e else "—")
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
