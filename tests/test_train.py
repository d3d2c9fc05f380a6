"""Training: input pipeline, optimizer, loss, the loop end to end, NaN stop, fine-tune checks."""

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from n3jax.configs.denoise import VARIANTS, get_config
from n3jax.checkpoint import load_model, save_model
from n3jax.data import pipeline
from n3jax.data.images import load_denoising_set
from n3jax.evaluate.denoise import image_key, make_denoise_fn
from n3jax.nn import create_model
from n3jax.train import optim
from n3jax.train.loop import train_and_evaluate
from n3jax.train.step import REFERENCE_LOSS_PIXELS, add_training_noise, denoising_loss
from tests.helpers.tiny_config import make_fake_data_root, tiny_config


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
  return make_fake_data_root(str(tmp_path_factory.mktemp("data")))


# --- input pipeline -------------------------------------------------------------------


def test_crop_plan_is_a_pure_function_of_seed_and_step():
  a = pipeline.crop_plan(7, seed=3, num_images=10, batch_size=4)
  b = pipeline.crop_plan(7, seed=3, num_images=10, batch_size=4)
  c = pipeline.crop_plan(8, seed=3, num_images=10, batch_size=4)
  for f in ("index", "offset", "flip", "rot90"):
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
  assert not np.array_equal(a.offset, c.offset)


def test_each_pass_visits_every_image_once():
  n, bs = 10, 4  # passes straddle batch boundaries
  idx = np.concatenate([pipeline.crop_plan(s, seed=0, num_images=n, batch_size=bs).index
                        for s in range(5)])  # 20 examples = 2 passes
  assert sorted(idx[:n]) == list(range(n)) and sorted(idx[n:2 * n]) == list(range(n))
  assert not np.array_equal(idx[:n], idx[n:2 * n])  # a fresh permutation per pass


def test_host_shards_partition_the_global_batch():
  source = [{"image": np.full((30, 30, 1), i, np.uint8)} for i in range(5)]
  full = pipeline.make_batch(source, 3, seed=1, batch_size=4, crop_size=8)
  parts = [pipeline.make_batch(source, 3, seed=1, batch_size=4, crop_size=8, shard_index=h,
                               num_shards=2) for h in range(2)]
  np.testing.assert_array_equal(np.concatenate(parts), full)
  with pytest.raises(ValueError, match="does not split"):
    pipeline.shard_slice(4, 0, 3)


def test_crop_flip_and_rotation():
  img = np.arange(6 * 7).reshape(6, 7, 1)
  np.testing.assert_array_equal(pipeline.crop_image(img, (0.0, 0.0), 3, False, 0), img[:3, :3])
  np.testing.assert_array_equal(pipeline.crop_image(img, (0.999, 0.999), 3, False, 0),
                                img[3:, 4:])
  np.testing.assert_array_equal(pipeline.crop_image(img, (0.0, 0.0), 3, True, 1),
                                np.rot90(img[:3, :3][::-1], 1))
  with pytest.raises(ValueError, match="smaller than"):
    pipeline.crop_image(img, (0, 0), 8, False, 0)


def test_check_source_names_the_bad_image():
  source = [{"image": np.zeros((50, 50, 1), np.uint8), "name": "ok"},
            {"image": np.zeros((20, 50, 1), np.uint8), "name": "tiny.png"}]
  with pytest.raises(ValueError, match="tiny.png"):
    pipeline.check_source(source, 40)


def test_prefetch_reraises_worker_errors():
  def fn(step):
    if step == 2:
      raise RuntimeError("bad step")
    return step
  out = []
  with pytest.raises(RuntimeError, match="bad step"):
    for s, v in pipeline.prefetch(fn, iter(range(5))):
      out.append(v)
  assert out == [0, 1]


# --- loss, noise, optimizer -----------------------------------------------------------


def test_loss_is_the_reference_scaling():
  clean = jnp.zeros((2, 80, 80, 1))
  pred = clean + 0.1
  np.testing.assert_allclose(denoising_loss(pred, clean), 0.5 * 80 * 80 * 0.01 * 1600 / 6400,
                             rtol=1e-6)
  # Smaller crops are scaled to the same per-pixel loss.
  np.testing.assert_allclose(denoising_loss(pred[:, :40, :40], clean[:, :40, :40]),
                             denoising_loss(pred, clean), rtol=1e-6)
  assert REFERENCE_LOSS_PIXELS == 1600


def test_training_noise_does_not_depend_on_the_device_split():
  clean = jnp.zeros((4, 8, 8, 1))
  key = jax.random.PRNGKey(5)
  whole = add_training_noise(clean, 25.0, key, 0)
  halves = jnp.concatenate([add_training_noise(clean[:2], 25.0, key, 0),
                            add_training_noise(clean[2:], 25.0, key, 2)])
  np.testing.assert_array_equal(whole, halves)
  assert abs(float(jnp.std(whole)) - 25 / 255) < 0.01


def test_weight_decay_mask_spares_biases_only():
  params = create_model("n3net_tiny").init(jax.random.PRNGKey(0), jnp.zeros((1, 24, 24, 1)))
  mask = optim.decay_mask(params["params"])
  flat = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_leaves_with_path(mask)}
  assert flat and all(m == (not k.endswith("['bias']")) for k, m in flat.items())
  assert any(k.endswith("['scale']") and m for k, m in flat.items())  # BN scales decay


def test_optimizer_is_adam_with_l2_added_to_the_gradient():
  config = get_config()
  tx = optim.make_optimizer(config)
  params = {"kernel": jnp.array([1.0, -2.0]), "bias": jnp.array([3.0])}
  grads = {"kernel": jnp.array([0.5, 0.1]), "bias": jnp.array([0.2])}
  updates, _ = tx.update(grads, tx.init(params), params)
  ref = optax.adam(config.learning_rate, eps=config.adam_eps)
  g_l2 = {"kernel": grads["kernel"] + config.weight_decay * params["kernel"],
          "bias": grads["bias"]}
  expected, _ = ref.update(g_l2, ref.init(params), params)
  for k in params:
    np.testing.assert_allclose(updates[k], expected[k], rtol=1e-6)


def test_learning_rate_decays_by_1e3_over_50_epochs_stepwise():
  config = get_config()
  sched = optim.learning_rate_schedule(learning_rate=1e-3, total_decay=1e-3,
                                       steps_per_epoch=1600, num_epochs=50)
  assert float(sched(0)) == pytest.approx(1e-3)
  assert float(sched(1599)) == pytest.approx(1e-3)
  assert float(sched(1600)) == pytest.approx(1e-3 * 10 ** (-3 / 50), rel=1e-5)
  assert float(sched(50 * 1600)) == pytest.approx(1e-6, rel=1e-4)
  assert config.num_epochs * config.steps_per_epoch == 80_000


# --- configs and models ---------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_smoke_variant_builds_and_trains_a_step(variant):
  config = get_config(f"{variant},smoke")
  model = create_model(config.model.name, **config.model.kwargs)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 40, 40, 1))
  variables = model.init({"params": jax.random.PRNGKey(1), "gumbel": jax.random.PRNGKey(2)}, x)
  y, updates = model.apply(variables, x, train=True, mutable=["batch_stats"],
                           rngs={"gumbel": jax.random.PRNGKey(3)})
  assert y.shape == x.shape and bool(jnp.isfinite(y).all())
  assert set(updates) == {"batch_stats"}


def test_config_argument_errors():
  with pytest.raises(ValueError, match="unknown config argument"):
    get_config("resnet")
  assert get_config("knn").model.name == "knn_input"
  assert get_config("dncnn18,smoke").crop_size == 40


# --- the loop -------------------------------------------------------------------------


def test_train_end_to_end_validates_saves_and_resumes(fake_root, tmp_path):
  config = tiny_config(fake_root, 6)
  config.val_every = 6
  workdir = str(tmp_path / "run")
  summary = train_and_evaluate(config, workdir)
  losses = [summary["train_loss"][s] for s in range(6)]
  assert all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert summary["step"] == 6 and summary["start_step"] == 0
  # metrics.json: the latest validation, a flat object.
  metrics = json.load(open(os.path.join(workdir, "metrics.json")))
  assert metrics["step"] == 6 and metrics["val_images"] == 2
  assert np.isfinite(metrics["val_psnr"]) and metrics["val_input_psnr"] == pytest.approx(20.2, abs=0.3)
  assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
  # The exported model gives the same validation PSNR as eval.py's code path.
  model, variables, meta = load_model(os.path.join(workdir, "model"))
  assert meta["step"] == 6 and meta["model_name"] == "n3net_tiny"
  denoise = make_denoise_fn(model, config.sigma)
  psnrs = [float(denoise(variables, jnp.asarray(im), image_key(config.seed, n))[2])
           for n, im in load_denoising_set("set12", fake_root)]
  assert np.mean(psnrs) == pytest.approx(metrics["val_psnr"], abs=1e-4)
  # Running again with more steps resumes from the checkpoint at step 6.
  config.num_train_steps = 8
  again = train_and_evaluate(config, workdir)
  assert again["start_step"] == 6 and again["step"] == 8 and sorted(again["train_loss"]) == [6, 7]


def test_nan_loss_stops_with_a_clear_error_and_saves_nothing(fake_root, tmp_path, monkeypatch):
  from n3jax.tasks import images
  real = images.make_p_train_step

  def nan_noise(model, sigma, **kwargs):  # the configured σ is checked: poison the step
    return real(model, float("nan"), **kwargs)
  monkeypatch.setattr(images, "make_p_train_step", nan_noise)
  config = tiny_config(fake_root, 3)
  workdir = str(tmp_path / "nan")
  with pytest.raises(FloatingPointError, match="non-finite training loss .* at step 0"):
    train_and_evaluate(config, workdir)
  assert not glob.glob(os.path.join(workdir, "checkpoints", "[0-9]*"))


def test_fine_tuning_checks_the_init_checkpoint(fake_root, tmp_path):
  model = create_model("dncnn17", depth=3, features=4)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 24, 24, 1)))
  save_model(tmp_path / "dncnn", variables, name="dncnn17", kwargs={"depth": 3, "features": 4})
  config = tiny_config(fake_root, 1)
  config.init_checkpoint = str(tmp_path / "dncnn")
  with pytest.raises(ValueError, match="holds a 'dncnn17' model"):
    train_and_evaluate(config, str(tmp_path / "ft"))
  # The same model fine-tunes: step 0 starts from the checkpoint's parameters.
  config.model.name, config.model.kwargs = "dncnn17", {"depth": 3, "features": 4}
  config.learning_rate = 1e-30  # > 0 (checked), below float32 resolution of the weights
  config.weight_decay = 0.0
  summary = train_and_evaluate(config, str(tmp_path / "ft2"))
  np.testing.assert_array_equal(summary["final_state"].params["conv_in"]["kernel"],
                                np.asarray(variables["params"]["conv_in"]["kernel"]))
