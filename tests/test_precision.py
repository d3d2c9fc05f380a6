"""Mixed precision: bfloat16 convolutions, everything else (and the results) in float32."""

import os

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from n3jax.configs.denoise import get_config
from n3jax.nn import create_model
from n3jax.nn.precision import compute_dtype
from n3jax.train.config_check import ConfigError, validate_config
from n3jax.train.step import denoising_loss


def _conv_operand_dtypes(fn, *args):
  """The operand dtypes of every convolution in ``fn``'s jaxpr (sub-jaxprs included)."""
  found = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
    for sub in jax.extend.core.subjaxprs(jaxpr):
      walk(sub)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


def test_bfloat16_computes_the_convolutions_and_keeps_the_rest_float32():
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 30, 30, 1))
  f32, bf16 = create_model("n3net_tiny"), create_model("n3net_tiny", dtype=jnp.bfloat16)
  variables = f32.init(jax.random.PRNGKey(1), x)

  def forward(model):
    def fn(v):
      return model.apply(v, x, train=True, mutable=["batch_stats", "intermediates"])
    return fn

  convs = _conv_operand_dtypes(forward(bf16), variables)
  assert convs and all(d == ("bfloat16", "bfloat16") for d in convs), convs
  assert all(d == ("float32", "float32") for d in _conv_operand_dtypes(forward(f32), variables))

  y, state = forward(bf16)(variables)
  y32, _ = forward(f32)(variables)
  assert y.dtype == jnp.float32
  for leaf in jax.tree.leaves(state["batch_stats"]):
    assert leaf.dtype == jnp.float32
  weights = state["intermediates"]["n3block_0"]["knn_weights"][0]
  assert weights.dtype == jnp.float32  # the relaxation
  # Really bfloat16 (it differs), and close (8-bit mantissas in the convolutions only).
  err = float(jnp.abs(y - y32).max() / jnp.abs(y32).max())
  assert 0 < err < 2e-2, err

  def loss(params, model):
    pred, _ = model.apply({**variables, "params": params}, x, train=True,
                          mutable=["batch_stats"])
    return denoising_loss(pred, x).mean()

  g16 = jax.grad(loss)(variables["params"], bf16)
  g32 = jax.grad(loss)(variables["params"], f32)
  for a, b in zip(jax.tree.leaves(g16), jax.tree.leaves(g32)):
    assert a.dtype == jnp.float32 and bool(jnp.isfinite(a).all())
  cos = sum(float(jnp.vdot(a, b)) for a, b in zip(jax.tree.leaves(g16), jax.tree.leaves(g32)))
  norm = lambda g: sum(float(jnp.vdot(a, a)) for a in jax.tree.leaves(g)) ** 0.5
  assert cos / (norm(g16) * norm(g32)) > 0.99  # the same descent direction


@pytest.mark.parametrize("model", ["dncnn17", "vdsr"])
def test_residual_networks_return_float32_from_bfloat16_convolutions(model):
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 24, 24, 1))
  net = create_model(model, dtype=jnp.bfloat16)
  variables = net.init(jax.random.PRNGKey(1), x)
  y = net.apply(variables, x)
  assert y.dtype == jnp.float32
  # The residual adds the float32 input: where the convolutions contribute nothing
  # (zero-initialized VDSR), the output is the input exactly, not its bfloat16 rounding.
  if model == "vdsr":
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def test_dtype_config_is_checked():
  config = get_config("smoke")
  assert config.dtype == "float32"
  validate_config(config)
  config.dtype = "bfloat16"
  validate_config(config)
  config.dtype = "float16"
  with pytest.raises(ConfigError, match=r"config\.dtype must be one of"):
    validate_config(config)
  config.dtype = "float32"
  config.model.kwargs.dtype = "bfloat16"
  with pytest.raises(ConfigError, match=r"config\.dtype instead"):
    validate_config(config)
  with pytest.raises(ValueError, match="dtype must be one of"):
    compute_dtype("fp8")


@pytest.mark.slow
def test_official_weights_in_bfloat16_lose_under_0_05_db(shared, converted_sigma25):
  """The σ=25 model on the fixture's 96² crop of Set12 01: bfloat16 against float32."""
  path = os.path.join(shared, "pretrained", "fixtures", "n3net_sigma25_set12-01_crop96.npz")
  if not os.path.isfile(path):
    pytest.skip(f"{path} is absent")
  fx = np.load(path)
  _, variables, _ = converted_sigma25
  noisy, clean = jnp.asarray(fx["input_noisy"])[None], fx["clean"]

  def psnr(dtype):
    out = jax.jit(create_model("n3net", dtype=dtype).apply)(variables, noisy)
    mse = np.mean((np.clip(np.asarray(out[0]), 0, 1) - clean) ** 2)
    return 10 * np.log10(1 / mse)

  p32, p16 = psnr(jnp.float32), psnr(jnp.bfloat16)
  assert abs(p16 - p32) < 0.05, (p32, p16)
