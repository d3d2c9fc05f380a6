"""The VDSR baseline (Kim et al. 2016) of paper Table 5, trained like configs/sisr.py.

VDSR: 20 conv layers of 64 channels, ReLU, global residual, no BatchNorm (665k parameters);
one model for ×2, ×3 and ×4 on T91 + BSDS500 train.

  python train.py --config=configs/vdsr.py --workdir=runs/vdsr
  python train.py --config=configs/vdsr.py:smoke --workdir=/tmp/vdsr_smoke   # CPU
  python eval.py --config=configs/vdsr.py --checkpoint=runs/vdsr/model --output=results/vdsr

Expected (VDSR paper, PSNR ×2 / ×3 / ×4): Set5 37.53 / 33.66 / 31.35, Set14 33.03 /
29.77 / 28.01, BSD100 31.90 / 28.82 / 27.29, Urban100 30.76 / 27.14 / 25.18. (VDSR was
trained with SGD and gradient clipping; we use the Adam protocol of configs/sisr.py.)
"""

from n3jax.configs import sisr


def get_config(arg: str = ""):
  """``arg``: empty or ``smoke``."""
  return sisr.get_config(arg, model="vdsr")
