"""NLRN's training protocol: piecewise learning rate, per-tensor clipping, the central-5×5
MSE, and its configs (paper values written out, Table 2 variants, checked errors)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from n3jax.configs import nlrn as nlrn_config
from n3jax.nn import create_model
from n3jax.nn.nlrn import NLRN
from n3jax.train import optim
from n3jax.train.config_check import ConfigError, validate_config
from n3jax.train.step import make_loss, mse_loss


def test_learning_rate_halves_at_the_official_boundaries():
  sched = optim.schedule_from_config(nlrn_config.get_config())
  expected = [(0, 1e-3), (99_999, 1e-3), (100_000, 5e-4), (200_000, 2.5e-4),
              (300_000, 1.25e-4), (400_000, 6.25e-5), (449_999, 6.25e-5),
              (450_000, 3.125e-5), (500_000, 3.125e-5)]
  for step, lr in expected:
    assert float(sched(step)) == pytest.approx(lr, rel=1e-6), step


def test_gradients_are_clipped_per_tensor_not_globally():
  config = nlrn_config.get_config()
  tx = optim.make_optimizer(config)
  params = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
  grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.1, 0.2, -0.2])}  # norms 5 and 0.3
  clip = optim.clip_by_norm_per_tensor(2.5)
  clipped, _ = clip.update(grads, clip.init(params), params)
  np.testing.assert_allclose(clipped["a"], [1.5, 2.0], rtol=1e-6)  # scaled to norm 2.5
  np.testing.assert_allclose(clipped["b"], grads["b"])  # below the bound: untouched
  updates, _ = tx.update(grads, tx.init(params), params)
  ref = optax.adam(1e-3)
  expected, _ = ref.update(clipped, ref.init(params), params)  # no weight decay
  for k in params:
    np.testing.assert_allclose(updates[k], expected[k], rtol=1e-6)


def test_mse_on_the_central_5x5_as_the_official_code_crops():
  clean = jnp.zeros((2, 43, 43, 1))
  pred = clean.at[:, 19:24, 19:24].set(1.0)  # rows/columns 21 - 2 ... 21 + 2
  assert np.allclose(mse_loss(pred, clean, center=5), 1.0)
  outside = clean.at[:, 18].set(5.0).at[:, :, 24].set(5.0)
  assert np.allclose(mse_loss(outside, clean, center=5), 0.0)
  np.testing.assert_allclose(mse_loss(pred, clean), 25 / 43 ** 2, rtol=1e-6)
  loss = make_loss("mse", center=5)
  assert np.allclose(loss(pred, clean), 1.0)
  with pytest.raises(ValueError, match="larger than"):
    mse_loss(pred[:, :4, :4], clean[:, :4, :4], center=5)
  with pytest.raises(ValueError, match="loss must be one of"):
    make_loss("l1")


def test_config_writes_out_the_paper_network_and_defaults_agree():
  config = nlrn_config.get_config()
  assert dict(config.model.kwargs) == nlrn_config.PAPER_NLRN
  defaults = NLRN()
  for field, value in nlrn_config.PAPER_NLRN.items():
    assert getattr(defaults, field) == value, field
  assert (config.crop_size, config.batch_size, config.num_train_steps) == (43, 16, 500_000)
  assert (config.loss, config.loss_center, config.clip_grad_norm_per_tensor) == ("mse", 5, 2.5)
  assert config.weight_decay == 0.0
  validate_config(config)
  assert nlrn_config.get_config("fullpatch").loss_center == 0
  assert nlrn_config.get_config("unshared").model.kwargs.share_weights is False
  assert nlrn_config.get_config("plain").model.kwargs.use_nonlocal is False
  assert nlrn_config.get_config("nopropagation").model.kwargs.propagate is False
  with pytest.raises(ValueError, match="unknown config argument"):
    nlrn_config.get_config("global")


@pytest.mark.parametrize("field,value,message", [
    ("lr_schedule", "cosine", "lr_schedule must be one of"),
    ("lr_boundaries", (300, 200), "increasing"),
    ("lr_factor", 0.0, "lr_factor"),
    ("clip_grad_norm_per_tensor", -1.0, "clip_grad_norm_per_tensor"),
    ("loss", "l1", "loss must be one of"),
    ("loss_center", 50, "larger than"),
])
def test_config_errors_name_the_field(field, value, message):
  config = nlrn_config.get_config()
  config[field] = value
  with pytest.raises(ConfigError, match=message):
    validate_config(config)


@pytest.mark.parametrize("variant", sorted(nlrn_config.VARIANTS))
def test_every_smoke_variant_builds_and_trains_a_step(variant):
  config = nlrn_config.get_config(f"{variant},smoke")
  validate_config(config)
  model = create_model(config.model.name, **config.model.kwargs)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 1))
  variables = model.init(jax.random.PRNGKey(1), x)
  y, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert y.shape == x.shape and bool(jnp.isfinite(y).all())
  assert set(updates) == {"batch_stats"}


def test_nlrn_trains_validates_exports_and_resumes_through_the_loop(tmp_path):
  """configs/nlrn.py end to end on tiny data: the central-5×5 loss, clipping and the
  piecewise schedule in the real loop; the exported model loads and restores an image."""
  from n3jax.checkpoint import load_model
  from n3jax import infer
  from n3jax.train.loop import train_and_evaluate
  from tests.helpers.tiny_config import make_fake_data_root
  root = make_fake_data_root(str(tmp_path / "data"), num_train=4, size=32)
  config = nlrn_config.get_config("smoke")
  config.model.kwargs.update(features=4, embed_features=2, num_steps=2, window=5)
  config.update(data_root=root, tfds_dir=str(tmp_path / "tfds"), train_set="train400",
                crop_size=16, batch_size=2, num_train_steps=3, steps_per_epoch=3,
                num_epochs=1, lr_boundaries=(2,), log_every=1, checkpoint_every=2,
                val_every=3, progress=False, loss_center=5)
  workdir = str(tmp_path / "run")
  summary = train_and_evaluate(config, workdir)
  assert summary["step"] == 3 and sorted(summary["train_loss"]) == [0, 1, 2]
  assert all(np.isfinite(v) for v in summary["train_loss"].values())
  assert np.isfinite(summary["val"][3]["val_psnr"])
  model, variables, meta = load_model(f"{workdir}/model")
  assert model == create_model("nlrn", **config.model.kwargs) and meta["step"] == 3
  out = infer.restore(model, variables, jnp.full((20, 23), 0.5))
  assert out.shape == (20, 23) and bool(jnp.isfinite(out).all())
  config.num_train_steps = 4  # resumes from the checkpoint at step 3
  assert train_and_evaluate(config, workdir)["start_step"] == 3


def test_one_variant_per_config_and_the_eval_protocol_is_checked():
  with pytest.raises(ValueError, match="choose one variant"):
    nlrn_config.get_config("full,plain")
  config = nlrn_config.get_config()
  config.eval_protocol = "tile"
  with pytest.raises(ConfigError, match="eval_protocol must be one of"):
    validate_config(config)
  # The denoising config has the same knobs, so N³Net can train on NLRN's schedule.
  from n3jax.configs import denoise
  config = denoise.get_config("smoke")
  config.lr_schedule, config.lr_boundaries = "piecewise", (100,)
  validate_config(config)
  config.lr_boundaries = None
  with pytest.raises(ConfigError, match="needs config.lr_boundaries"):
    validate_config(config)
