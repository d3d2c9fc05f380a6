# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # n3jax: Neural Nearest Neighbors Networks in JAX
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/n3jax/n3jax/blob/main/notebooks/n3jax_colab.ipynb)
#
# N³Net (Plötz & Roth, NeurIPS 2018) makes k-nearest-neighbour selection differentiable and
# puts it inside a CNN. This notebook:
#
# 1. loads the authors' σ=25 Gaussian denoiser,
# 2. jit-compiles it and times the compilation and the run separately,
# 3. denoises a bundled photo and one of yours,
# 4. looks inside an N³ block: one patch's neighbour weights and the temperature map,
# 5. uses the pure ops on a point set (self-excluded kNN and a gradient),
# 6. trains a tiny model for a few steps.
#
# On Colab choose *Runtime → Change runtime type → GPU* first (a CPU works too, slower).
# The paired file `notebooks/n3jax_colab.py` is the same notebook as text (jupytext).

# %%
import os
import sys

IN_COLAB = "google.colab" in sys.modules
REPO = "https://github.com/n3jax/n3jax"
if IN_COLAB:  # In a checkout, or after `pip install n3jax[notebook]`, nothing to install.
  import subprocess
  subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                  f"n3jax[notebook] @ git+{REPO}"], check=True)

# Figures are shown and also written here.
FIGURES = os.path.abspath(os.environ.get("N3JAX_NOTEBOOK_FIGURES", "figures"))
os.makedirs(FIGURES, exist_ok=True)

# %%
import json
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from n3jax import infer, ops, pretrained
from n3jax.data.noise import add_gaussian_noise
from n3jax.evaluate.metrics import psnr

print("JAX", jax.__version__, "on", jax.devices()[0].device_kind)
SUMMARY = {"device": jax.devices()[0].device_kind}


def save(fig, name):
  """Shows a figure and writes it to FIGURES/name."""
  path = os.path.join(FIGURES, name)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.show()
  print("wrote", path)


# %% [markdown]
# ## 1. The official σ=25 weights
#
# The authors' checkpoints live in [visinf/n3net](https://github.com/visinf/n3net). Their
# licence allows non-commercial research and education and forbids redistribution, so n3jax
# ships none: on Colab this cell downloads the σ=25 file from the authors' repository and
# converts it (no PyTorch needed, no code from the file is run). Elsewhere it uses a model
# installed with `n3jax-convert FILE --install`, or the `.t7` files in
# `$N3JAX_PRETRAINED_DIR`; without either, an untrained tiny model keeps the notebook
# running (its outputs are then meaningless).

# %%
from n3jax.checkpoint import load_model
from n3jax.convert import convert_official
from n3jax.nn import create_model

SIGMA = 25.0


def official_sigma25():
  """(model, variables, where they came from)."""
  installed = pretrained.installed_denoisers().get(SIGMA)
  if installed:
    model, variables, _ = load_model(installed)
    return model, variables, installed
  path = pretrained.official_files().get(SIGMA)
  if path is None and IN_COLAB:
    import urllib.request
    path = "n3net_gauss_sigma25.t7"
    urllib.request.urlretrieve(pretrained.OFFICIAL_URL.format(sigma=25), path)
  if path:
    variables, meta = convert_official(path)
    assert meta["official"], "not the authors' σ=25 checkpoint"
    return create_model("n3net"), variables, path
  model = create_model("n3net_tiny")
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 1)))
  return model, variables, "untrained n3net_tiny (no weights found)"


model, variables, SOURCE = official_sigma25()
SUMMARY["weights"] = SOURCE
print("weights:", SOURCE)

# %% [markdown]
# ## 2. Compile once, then run
#
# `infer.restore` checks the image (float, the model's channels, finite values) and runs
# the `jax.jit`-compiled `infer.restore_unchecked` (the model is a static argument).
# Lowering and compiling that explicitly separates the one-time compilation from the run.

# %%
from skimage import data as skdata

on_cpu = jax.default_backend() == "cpu"
side = 256 if on_cpu else 512  # the full 512² photo on an accelerator
clean = jnp.asarray(skdata.camera()[:side, :side] / 255.0, jnp.float32)
noisy = add_gaussian_noise(clean, SIGMA, jax.random.PRNGKey(0))

start = time.perf_counter()
compiled = infer.restore_unchecked.lower(model, variables, noisy).compile()
compile_s = time.perf_counter() - start
runs = []
for _ in range(3):
  start = time.perf_counter()
  denoised = compiled(variables, noisy).block_until_ready()
  runs.append(time.perf_counter() - start)
run_s = float(np.median(runs))
print(f"{side}x{side}: compile {compile_s:.2f} s, run {1e3 * run_s:.1f} ms "
      f"(median of 3) on {jax.devices()[0].device_kind}")
SUMMARY.update(size=side, compile_s=compile_s, run_s=run_s)


# %%
def show_triplet(images, titles, name):
  fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
  for ax, im, title in zip(axes, images, titles):
    im = np.clip(np.asarray(im), 0, 1)
    ax.imshow(im if im.ndim == 3 else im, cmap=None if im.ndim == 3 else "gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
  save(fig, name)


p_noisy, p_denoised = float(psnr(noisy, clean)), float(psnr(denoised, clean))
SUMMARY.update(camera_noisy_psnr=p_noisy, camera_denoised_psnr=p_denoised)
show_triplet([clean, noisy, denoised],
             ["clean", f"noisy σ={SIGMA:g}: {p_noisy:.2f} dB", f"N³Net: {p_denoised:.2f} dB"],
             "camera.png")

# %% [markdown]
# ## 3. Your own photo
#
# On Colab, upload an image (PNG, JPEG or TIFF, 8 or 16 bits). Elsewhere, set
# `N3JAX_NOTEBOOK_IMAGE` to a file. It is treated as clean: σ=25 noise is added and removed
# again, channel by channel (the model is gray), in overlapping blocks so any size fits in
# memory. To denoise photos that are already noisy, use `n3jax-denoise photo.jpg`.

# %%
from n3jax.data import imagefile

path = os.environ.get("N3JAX_NOTEBOOK_IMAGE")
if IN_COLAB:
  from google.colab import files
  uploaded = files.upload()
  path = next(iter(uploaded), None)
if path:
  mine = imagefile.to_unit(imagefile.read_picture(path).color)  # [H, W, 1 or 3] in [0, 1]
  mine_noisy = np.asarray(add_gaussian_noise(jnp.asarray(mine), SIGMA, jax.random.PRNGKey(1)))
  mine_denoised = np.stack([infer.restore_large(model, variables, mine_noisy[..., c])
                            for c in range(mine.shape[-1])], axis=-1)
  m_noisy = float(psnr(jnp.asarray(mine_noisy), jnp.asarray(mine)))
  m_denoised = float(psnr(jnp.asarray(mine_denoised), jnp.asarray(mine)))
  SUMMARY.update(upload=os.path.basename(path), upload_shape=list(mine.shape),
                 upload_noisy_psnr=m_noisy, upload_denoised_psnr=m_denoised)
  squeeze = (lambda a: a[..., 0]) if mine.shape[-1] == 1 else (lambda a: a)
  show_triplet([squeeze(mine), squeeze(mine_noisy), squeeze(mine_denoised)],
               [os.path.basename(path), f"noisy: {m_noisy:.2f} dB", f"N³Net: {m_denoised:.2f} dB"],
               "upload.png")
else:
  print("no image given (set N3JAX_NOTEBOOK_IMAGE, or run on Colab to upload one)")

# %% [markdown]
# ## 4. Inside an N³ block
#
# The network is `DnCNN → N³ block → DnCNN → N³ block → DnCNN`. Each N³ block cuts its input
# into 10×10 patches (stride 5), embeds them, and gives every patch k = 7 continuous nearest
# neighbours among the 224 other patches of its 15×15 search window. The block records the
# neighbour weights `[B, M, O, k]` and the per-patch temperature `[B, M]` as Flax
# intermediates. Here: the first block on a crop of the noisy photo.

# %%
crop = noisy[96:192, 160:256]  # the face and the collar
stage0 = model.apply(variables, crop[None, :, :, None], stage=0)  # DnCNN_0
_, state = model.apply(variables, stage0, stage=1, mutable=["intermediates"])  # N3Block_0
block = state["intermediates"]["n3block_0"]
weights = np.asarray(block["knn_weights"][0][0])  # [M, O, k]
temperature = np.asarray(block["temperature"][0][0])  # [M]
h, w = crop.shape
p, s, window = model.patch_size, model.stride, model.window
n1, n2 = ops.grid_size(h, p, s), ops.grid_size(w, p, s)
top, left = ops.patch_padding(h, p, s)[0], ops.patch_padding(w, p, s)[0]
qi, qj = n1 // 2, n2 // 2  # the query patch
rows, cols = (np.asarray(a) for a in ops.window_candidates(jnp.asarray(qi), jnp.asarray(qj),
                                                           n1, n2, window))
w_query = weights[qi * n2 + qj]  # [O, k]: the query's weights over its 224 candidates
order = np.argsort(-w_query.sum(axis=1))[:model.k]
SUMMARY.update(grid=[n1, n2], candidates=int(w_query.shape[0]), k=int(w_query.shape[1]),
               query_weight_sums=w_query.sum(axis=0).tolist())


def on_grid(values):
  """Candidate values [O] → the patch grid [n1, n2] (the query and other cells: 0)."""
  grid = np.zeros((n1, n2))
  grid[rows, cols] = values
  return grid


fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.8))
axes[0].imshow(np.asarray(crop), cmap="gray", vmin=0, vmax=1)
for rank, o in enumerate(order):
  y, x = rows[o] * s - top, cols[o] * s - left
  axes[0].add_patch(plt.Rectangle((x - .5, y - .5), p, p, fill=False, lw=1.2,
                                  color=plt.cm.autumn(rank / model.k)))
axes[0].add_patch(plt.Rectangle((qj * s - left - .5, qi * s - top - .5), p, p, fill=False,
                                lw=2.5, color="cyan"))
axes[0].set_title("query patch (cyan), its 7 heaviest\ncandidates (red → yellow)")
im = axes[1].imshow(on_grid(w_query.sum(axis=1)), cmap="magma")
axes[1].scatter([qj], [qi], marker="x", color="cyan")
axes[1].set_title("its weights summed over the\nk neighbours (patch grid)")
fig.colorbar(im, ax=axes[1])
for ax in axes:
  ax.axis("off")
save(fig, "n3block_weights.png")

fig, axes = plt.subplots(1, model.k, figsize=(2.2 * model.k, 2.6))
top_weight = w_query.max()
for j, ax in enumerate(axes):
  ax.imshow(on_grid(w_query[:, j]), cmap="viridis", vmin=0, vmax=top_weight)
  ax.set_title(f"neighbour {j + 1}\nmax weight {w_query[:, j].max():.2f}", fontsize=9)
  ax.axis("off")
save(fig, "n3block_neighbours.png")

fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
axes[0].imshow(np.asarray(crop), cmap="gray", vmin=0, vmax=1)
axes[0].set_title("input crop")
im = axes[1].imshow(np.log10(temperature.reshape(n1, n2)), cmap="coolwarm")
axes[1].set_title("log10 temperature per patch")
fig.colorbar(im, ax=axes[1])
for ax in axes:
  ax.axis("off")
save(fig, "n3block_temperature.png")

# %% [markdown]
# ## 5. The pure ops on a point set
#
# `n3jax.ops` needs no Flax. Here: k = 3 continuous nearest neighbours among 2-D points,
# each point excluded from its own candidates by a mask, and a gradient with respect to the
# temperature and the points.

# %%
key_a, key_b = jax.random.split(jax.random.PRNGKey(2))
centres = jax.random.normal(key_a, (4, 2)) * 3
points = (centres[:, None] + 0.5 * jax.random.normal(key_b, (4, 15, 2))).reshape(-1, 2)  # [60, 2]
not_self = ops.exclude_self_mask(points.shape[0])


def soft_neighbours(points, temperature):
  logits = -ops.pairwise_sq_distances(points, points)  # [N, N]
  weights = ops.continuous_knn_weights(logits, temperature, k=3, mask=not_self)  # [N, N, 3]
  return ops.aggregate(weights, points), weights  # [N, 3, 2]


def loss(points, temperature):  # mean distance to the soft neighbours
  neighbours, _ = soft_neighbours(points, temperature)
  return jnp.mean(jnp.sum((neighbours - points[:, None]) ** 2, axis=-1))


g_points, g_temperature = jax.grad(loss, argnums=(0, 1))(points, 0.3)
print("d loss / d temperature =", float(g_temperature),
      "| finite gradients:", bool(jnp.isfinite(g_points).all()))
SUMMARY.update(pointset_grad_temperature=float(g_temperature))

neighbours, w_pts = soft_neighbours(points, 0.3)
fig, ax = plt.subplots(figsize=(5, 5))
pts = np.asarray(points)
for i, j in zip(*np.nonzero(np.asarray(w_pts).sum(-1) > 0.05)):
  ax.plot(*pts[[i, j]].T, color="gray", lw=0.5 + 2 * float(w_pts[i, j].sum()) / 3, alpha=.6)
ax.scatter(*pts.T, s=14, zorder=3)
ax.set_title("soft 3-NN graph (line width: weight)")
ax.set_aspect("equal")
save(fig, "pointset_knn.png")

# %% [markdown]
# ## 6. Train a tiny N³Net for a few steps
#
# A small N³Net (`n3net_tiny`) on random 32×32 crops of the photo with fresh σ=25 noise,
# trained with optax. `train.py --config=configs/denoise.py` does the same at scale, on all
# devices with `pmap`.

# %%
import optax

tiny = create_model("n3net_tiny")
image = jnp.asarray(skdata.camera() / 255.0, jnp.float32)
tiny_vars = tiny.init(jax.random.PRNGKey(3), jnp.zeros((1, 32, 32, 1)))
tx = optax.adam(3e-3)
opt_state = tx.init(tiny_vars["params"])


def batch(key, n=8, size=32):
  k_pos, k_noise = jax.random.split(key)
  pos = jax.random.randint(k_pos, (n, 2), 0, image.shape[0] - size)
  crops = jax.vmap(lambda p: jax.lax.dynamic_slice(image, p, (size, size)))(pos)[..., None]
  return add_gaussian_noise(crops, SIGMA, k_noise), crops


@jax.jit
def train_step(variables, opt_state, key):
  noisy_b, clean_b = batch(key)

  def mse(params):
    out, updates = tiny.apply({"params": params, "batch_stats": variables["batch_stats"]},
                              noisy_b, train=True, mutable=["batch_stats"])
    return jnp.mean((out - clean_b) ** 2), updates

  (value, updates), grads = jax.value_and_grad(mse, has_aux=True)(variables["params"])
  changes, opt_state = tx.update(grads, opt_state)
  params = optax.apply_updates(variables["params"], changes)
  return {"params": params, "batch_stats": updates["batch_stats"]}, opt_state, value


losses = []
for step in range(40):
  tiny_vars, opt_state, value = train_step(tiny_vars, opt_state, jax.random.PRNGKey(100 + step))
  losses.append(float(value))
  if step % 10 == 9:
    print(f"step {step + 1}: loss {np.mean(losses[-10:]):.5f} "
          f"(PSNR {-10 * np.log10(np.mean(losses[-10:])):.2f} dB)")
SUMMARY.update(train_first_loss=float(np.mean(losses[:5])), train_last_loss=float(np.mean(losses[-5:])))
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(losses)
ax.set_xlabel("step")
ax.set_ylabel("MSE")
ax.set_yscale("log")
ax.set_title("n3net_tiny, σ=25")
save(fig, "training_loss.png")

# %%
with open(os.path.join(FIGURES, "summary.json"), "w") as f:
  json.dump(SUMMARY, f, indent=2)
print(json.dumps(SUMMARY, indent=2))
