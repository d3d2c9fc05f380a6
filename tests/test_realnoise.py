"""Real camera noise (paper Sec. 5.3): the noise, the raw-like transform, the noise-map
models and the release's checkpoint layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from n3jax.data import poisson_gaussian as pg
from n3jax.nn import create_model

PROTOCOL = pg.RealNoiseProtocol()


@pytest.mark.parametrize("a,b", [(1e-4, 1e-6), (0.01, 1e-4), (0.1, 1e-3)])
def test_noise_variance_is_a_x_plus_b(a, b):
  """Empirical variance of (noisy − clean) at fixed intensities, 2²⁰ samples each, unclipped
  (clipping at 0 and 1 is what the release adds on top, tested below)."""
  n = 1 << 20
  for i, x in enumerate((0.02, 0.2, 0.5, 0.9)):
    clean = jnp.full((n,), x, jnp.float32)
    noisy = pg.add_poisson_gaussian_noise(clean, a, b, jax.random.PRNGKey(i), clip=False)
    var = float(jnp.var(noisy - clean))
    assert var == pytest.approx(a * x + b, rel=0.02), (a, b, x)
  # The per-pixel std follows the pixel, within one image.
  clean = jnp.repeat(jnp.asarray([0.05, 0.8], jnp.float32), n // 2)
  resid = pg.add_poisson_gaussian_noise(clean, a, b, jax.random.PRNGKey(9), clip=False) - clean
  assert float(jnp.var(resid[n // 2:])) / float(jnp.var(resid[:n // 2])) == pytest.approx(
      (a * 0.8 + b) / (a * 0.05 + b), rel=0.03)


def test_clipping_keeps_noisy_images_in_range_and_is_optional():
  clean = jnp.linspace(0, 1, 4096)
  key = jax.random.PRNGKey(0)
  clipped = pg.add_poisson_gaussian_noise(clean, 0.1, 0.01, key)
  raw = pg.add_poisson_gaussian_noise(clean, 0.1, 0.01, key, clip=False)
  assert float(clipped.min()) >= 0 and float(clipped.max()) <= 1
  assert float(raw.min()) < 0 and float(raw.max()) > 1
  np.testing.assert_array_equal(np.asarray(clipped), np.clip(np.asarray(raw), 0, 1))


def test_noise_levels_are_drawn_as_the_release_draws_them():
  keys = jax.random.split(jax.random.PRNGKey(0), 20000)
  a, b = jax.vmap(lambda k: pg.sample_noise_levels(k, protocol=PROTOCOL))(keys)
  log_a, log_b = np.log10(np.asarray(a)), np.log10(np.asarray(b))
  assert log_a.min() >= -4 - 1e-5 and log_a.max() <= -1 + 1e-5
  assert np.quantile(log_a, [0.1, 0.5, 0.9]) == pytest.approx([-3.7, -2.5, -1.3], abs=0.05)
  offset = log_b - log_a
  assert offset.min() >= -3.6 - 1e-4 and offset.max() <= -1.0 + 1e-4
  assert np.mean(offset) == pytest.approx(-2.3, abs=0.02)
  assert abs(np.corrcoef(log_a, offset)[0, 1]) < 0.03  # independent


def test_raw_like_training_transform_ranges():
  clean = jnp.linspace(0, 1, 257)
  keys = jax.random.split(jax.random.PRNGKey(1), 2000)
  out = np.asarray(jax.vmap(lambda k: pg.raw_like(clean, k, protocol=PROTOCOL))(keys))
  scale = out[:, -1]  # f_c · 1^f_e
  assert scale.min() >= 0.25 - 1e-6 and scale.max() <= 1 + 1e-6
  assert np.mean(scale) == pytest.approx(0.625, abs=0.02)
  assert out.min() >= 0 and (out <= scale[:, None] + 1e-6).all()
  # The power, from the value at 0.5: f_c · 0.5^f_e.
  power = np.log(out[:, 128] / scale) / np.log(0.5)
  assert power.min() >= 1.25 - 1e-3 and power.max() <= 10 + 1e-3
  assert np.mean(power) == pytest.approx(5.625, abs=0.15)
  assert (np.diff(out, axis=1) >= 0).all()  # monotone: no image content is reordered


def test_raw_like_test_transform_uses_power_2_5_and_scales_half_or_one():
  clean = jnp.linspace(0, 1, 101)
  seen = set()
  for i in range(40):
    out = np.asarray(pg.raw_like_test(clean, jax.random.PRNGKey(i), protocol=PROTOCOL))
    scale = out[-1]
    seen.add(round(float(scale), 6))
    np.testing.assert_allclose(out, scale * np.linspace(0, 1, 101) ** 2.5, rtol=1e-5,
                               atol=1e-7)
  assert seen == {0.5, 1.0}


def test_corrupt_for_training_appends_the_noise_map_and_is_keyed():
  clean = jax.random.uniform(jax.random.PRNGKey(0), (16, 16, 1))
  key = jax.random.PRNGKey(3)
  x, target = pg.corrupt_for_training(clean, key, protocol=PROTOCOL)
  x2, target2 = pg.corrupt_for_training(clean, key, protocol=PROTOCOL)
  np.testing.assert_array_equal(np.asarray(x), np.asarray(x2))
  assert x.shape == (16, 16, 3) and target.shape == (16, 16, 1)
  a, b = float(x[0, 0, 1]), float(x[0, 0, 2])
  assert np.all(np.asarray(x[..., 1]) == a) and np.all(np.asarray(x[..., 2]) == b)
  assert 1e-4 <= a <= 0.1 and -3.6 <= np.log10(b) - np.log10(a) <= -1.0
  assert 0 <= float(x[..., 0].min()) and float(x[..., 0].max()) <= 1
  other, _ = pg.corrupt_for_training(clean, jax.random.PRNGKey(4), protocol=PROTOCOL)
  assert not np.array_equal(np.asarray(other), np.asarray(x))
  # The map holds the level of the noise that was added: unclipped, the residual's variance
  # is the mean of a·target + b with the map's a and b.
  unclipped = pg.RealNoiseProtocol(clip=False)
  big = jax.random.uniform(jax.random.PRNGKey(1), (256, 256, 1))
  for i in range(4):
    x, target = pg.corrupt_for_training(big, jax.random.PRNGKey(10 + i), protocol=unclipped)
    a, b = float(x[0, 0, 1]), float(x[0, 0, 2])
    var = float(jnp.var(x[..., 0] - target[..., 0]))
    assert var == pytest.approx(float(jnp.mean(a * target + b)), rel=0.05), (a, b)


def test_protocol_and_levels_are_checked():
  with pytest.raises(ValueError, match="log10_a_range"):
    pg.RealNoiseProtocol(log10_a_range=(-1.0, -4.0))
  with pytest.raises(ValueError, match="unknown fields"):
    pg.RealNoiseProtocol.from_config({"log10_a_rang": (-4, -1)})
  with pytest.raises(ValueError, match="powers"):
    pg.RealNoiseProtocol(test_power=0)
  assert pg.RealNoiseProtocol.from_config({"test_scales": [0.5]}).test_scales == (0.5,)
  assert pg.check_noise_levels("0.01", 1e-4) == (0.01, 1e-4)
  for a, b, match in ((-1, 0, "a must be"), (0.01, float("nan"), "b must be"),
                      (0, 0, "no noise"), ("x", 0, "a must be a number")):
    with pytest.raises(ValueError, match=match):
      pg.check_noise_levels(a, b)


def test_noise_map_models_add_the_residual_to_the_image_channel_only():
  """With all-zero weights a DnCNN outputs its residual: the image channel, not a or b."""
  for name, kwargs in (("dncnn_pg", dict(depth=3, features=4)),
                       ("n3net_pg", dict(num_dncnns=2, depth=3, features=4, interm_channels=4,
                                         embed_channels=2, embed_features=4, window=3))):
    model = create_model(name, **kwargs)
    x = pg.with_noise_map(jax.random.uniform(jax.random.PRNGKey(0), (1, 20, 20, 1)), 0.3, 0.7)
    variables = model.init(jax.random.PRNGKey(1), x)
    zero = jax.tree_util.tree_map(jnp.zeros_like, variables["params"])
    if name == "dncnn_pg":
      y = model.apply({**variables, "params": zero}, x)
      np.testing.assert_allclose(np.asarray(y), np.asarray(x[..., :1]), atol=1e-6)
    else:
      stage0 = model.apply({**variables, "params": zero}, x, stage=0)
      assert stage0.shape[-1] == 4
      np.testing.assert_allclose(np.asarray(stage0[..., 0]), np.asarray(x[..., 0]), atol=1e-6)
      np.testing.assert_allclose(np.asarray(stage0[..., 1:]), 0, atol=1e-6)


def test_release_architecture_embeds_32_channels_in_8():
  model = create_model("n3net_pg")
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 40, 40, 3))))
  p = shapes["params"]
  assert p["dncnn_0"]["conv_in"]["kernel"].shape == (3, 3, 3, 128)
  assert p["dncnn_0"]["conv_out"]["kernel"].shape == (3, 3, 128, 32)
  assert p["n3block_0"]["embedcnn"]["conv_out"]["kernel"].shape == (3, 3, 64, 8)
  assert p["n3block_0"]["tempcnn"]["conv_in" if "conv_in" in p["n3block_0"]["tempcnn"]
                                   else "conv_0"]["kernel"].shape[2] == 32
  assert p["dncnn_1"]["conv_in"]["kernel"].shape == (3, 3, 128, 128)  # (k + 1) · 32 in
  assert len([k for k in p["dncnn_2"] if k.startswith("conv_")]) == 9 - 2 + 2


def release_pg_state_dict(seed: int = 0, *, ndncnn: int = 3, depth: int = 9,
                          features: int = 128, interm: int = 32, embed: int = 8, k: int = 3,
                          embed_features: int = 64, embed_depth: int = 3, nin: int = 3,
                          nout: int = 1):
  """A state dict with the names and shapes of the official ``N3Net`` module of
  ``src_denoising/models/n3net.py`` built as ``experiment_pg.Experiment.create_network``
  builds it (written from the release's module structure, not from our key table)."""
  rng = np.random.default_rng(seed)
  state = {}

  def conv(name, o, i, bias):
    state[name + ".weight"] = rng.normal(size=(o, i, 3, 3)).astype(np.float32) * 0.05
    if bias:
      state[name + ".bias"] = rng.normal(size=(o,)).astype(np.float32) * 0.01

  def bn(name, c):
    state[name + ".weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    state[name + ".bias"] = rng.normal(size=c).astype(np.float32) * 0.01
    state[name + ".running_mean"] = rng.normal(size=c).astype(np.float32) * 0.01
    state[name + ".running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)

  def dncnn(prefix, cin, cout):
    conv(prefix + ".conv1", features, cin, True)
    bn(prefix + ".bn1", features)  # built but unused by DnCNN.forward
    for i in range(depth - 2):  # layer1 = [conv, bn, relu] * (depth - 2)
      conv(f"{prefix}.layer1.{3 * i}", features, features, False)
      bn(f"{prefix}.layer1.{3 * i + 1}", features)
    conv(prefix + ".conv2", cout, features, True)

  def cnn(prefix, cin, cout):  # cnn_from_def: (depth − 1) × [conv, bn, relu] + conv
    for i in range(embed_depth - 1):
      conv(f"{prefix}.{3 * i}", embed_features, cin if i == 0 else embed_features, False)
      bn(f"{prefix}.{3 * i + 1}", embed_features)
    conv(f"{prefix}.{3 * (embed_depth - 1)}", cout, embed_features, True)

  cin = nin
  for b in range(ndncnn - 1):
    dncnn(f"blocks.{b}", cin, interm)
    cnn(f"nls.{b}.embedcnn", interm, embed)
    cnn(f"nls.{b}.tempcnn", interm, 1)
    bn(f"nls.{b}.n3aggregation.aggregation.nnn.bn", 1)
    cin = (k + 1) * interm
  dncnn(f"blocks.{ndncnn - 1}", cin, nout)
  return state


def test_release_pg_state_dict_maps_onto_n3net_pg_and_runs():
  from n3jax.convert.n3net import release_architecture, state_dict_to_variables
  state = release_pg_state_dict()
  name, kwargs, channels = release_architecture(state)
  assert (name, kwargs, channels) == ("n3net_pg", {}, 3)
  v = state_dict_to_variables(state, model_name=name, model_kwargs=kwargs)
  p = v["params"]
  np.testing.assert_array_equal(np.asarray(p["dncnn_0"]["conv_in"]["kernel"])[1, 2, :, 7],
                                state["blocks.0.conv1.weight"][7, :, 1, 2])
  np.testing.assert_array_equal(p["dncnn_2"]["bn_6"]["scale"], state["blocks.2.layer1.19.weight"])
  np.testing.assert_array_equal(np.asarray(p["n3block_1"]["embedcnn"]["conv_out"]["kernel"])[0, 0],
                                state["nls.1.embedcnn.6.weight"][:, :, 0, 0].T)
  model = create_model(name, **kwargs)
  x = pg.with_noise_map(jax.random.uniform(jax.random.PRNGKey(0), (1, 40, 40, 1)), 0.01, 1e-4)
  y = model.apply(v, x)
  assert y.shape == (1, 40, 40, 1) and bool(jnp.isfinite(y).all())
  # A Gaussian-layout dict of the same shapes but one input channel is read as n3net.
  gauss = release_pg_state_dict(nin=1, features=64, depth=6, interm=8, k=7)
  assert release_architecture(gauss) == ("n3net", {}, 1)
  with pytest.raises(ValueError, match="neither"):
    release_architecture(release_pg_state_dict(nin=2, features=8, depth=3))


def test_converter_cli_writes_a_realnoise_model(tmp_path, monkeypatch):
  """The release's pickle layout (``{"net": state_dict, "epoch": …}``) through n3jax-convert:
  written as a legacy file by the test helper, converted, loaded back."""
  from tests.test_convert import write_legacy
  from n3jax.checkpoint import load_model
  from n3jax.convert.__main__ import main
  state = release_pg_state_dict(ndncnn=2, depth=3, features=8)
  path = tmp_path / "051_ckpt.t7"
  write_legacy(path, {n: (str(i), 0, a.shape, tuple(int(s) for s in np.cumprod(
      (1,) + a.shape[::-1])[:-1][::-1])) for i, (n, a) in enumerate(state.items())},
      {str(i): a.ravel() for i, a in enumerate(state.values())})
  monkeypatch.setenv("N3JAX_MODEL_DIR", str(tmp_path / "models"))
  assert main([str(path), "--install"]) == 0
  model, variables, meta = load_model(tmp_path / "models" / "n3net-pg")
  assert meta["model_name"] == "n3net_pg" and meta["task"] == "realnoise"
  assert (model.num_dncnns, model.depth, model.features) == (2, 3, 8)
  assert main([str(path), "--out", str(tmp_path / "x"), "--sigma", "25"]) == 1


def test_corrupt_batch_keys_examples_by_their_global_index():
  from n3jax.train.step import corrupt_batch
  clean = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 1))
  key = jax.random.PRNGKey(5)
  fn = lambda x, k: pg.corrupt_for_training(x, k, protocol=PROTOCOL)  # noqa: E731
  whole = corrupt_batch(clean, fn, key, 0)
  halves = [corrupt_batch(clean[:2], fn, key, 0), corrupt_batch(clean[2:], fn, key, 2)]
  for i in range(2):
    np.testing.assert_array_equal(np.asarray(whole[i]),
                                  np.concatenate([np.asarray(h[i]) for h in halves]))


def _tiny_realnoise_config(root, steps, *, model="n3net_pg"):
  import os
  from n3jax.configs.realnoise import get_config
  config = get_config("smoke" if model == "n3net_pg" else "dncnn,smoke")
  config.model.kwargs = ({"num_dncnns": 2, "depth": 3, "features": 8, "interm_channels": 2,
                          "embed_channels": 2, "k": 2, "embed_features": 8, "embed_depth": 2,
                          "window": 5, "bn_momentum": 0.1} if model == "n3net_pg" else
                         {"depth": 3, "features": 8})
  config.data_root = root
  config.tfds_dir = os.path.join(root, "_tfds")
  config.train_set = "train400"
  config.crop_size = 24
  config.batch_size = 4
  config.steps_per_epoch = steps
  config.num_epochs = 1
  config.num_train_steps = steps
  config.log_every = 1
  config.checkpoint_every = 1
  config.val_every = steps
  config.progress = False
  return config


@pytest.fixture(scope="module")
def realnoise_run(tmp_path_factory):
  """A 4-step real-noise run, and the same run stopped after 2 steps and resumed."""
  from tests.helpers.tiny_config import make_fake_data_root
  from n3jax.train.loop import train_and_evaluate
  root = make_fake_data_root(str(tmp_path_factory.mktemp("data")))
  work = tmp_path_factory.mktemp("runs")
  straight = train_and_evaluate(_tiny_realnoise_config(root, 4), str(work / "straight"))
  train_and_evaluate(_tiny_realnoise_config(root, 2), str(work / "resumed"))
  resumed = train_and_evaluate(_tiny_realnoise_config(root, 4), str(work / "resumed"))
  return root, work, straight, resumed


def test_realnoise_training_resumes_exactly_and_validates(realnoise_run):
  from n3jax.checkpoint import load_model
  root, work, straight, resumed = realnoise_run
  assert resumed["start_step"] == 2
  for step in (2, 3):  # the steps after the resume (0-based)
    assert resumed["train_loss"][step] == straight["train_loss"][step]
  val = straight["val"][4]
  # The noisy input at the validation level (0.01, 1e-4) is far from clean, and finite.
  assert 15 < val["val_input_psnr"] < 45 and np.isfinite(val["val_psnr"])
  model, _, meta = load_model(work / "straight" / "model")
  assert meta["task"] == "realnoise" and meta["noise"] == "poisson_gaussian"
  assert meta["model_name"] == "n3net_pg" and meta["noise_protocol"]["test_power"] == 2.5


def test_realnoise_eval_reports_every_level_deterministically(realnoise_run, tmp_path):
  import json
  from n3jax.checkpoint import load_model
  from n3jax.evaluate.realnoise import evaluate_realnoise
  root, work, _, _ = realnoise_run
  model, variables, meta = load_model(work / "straight" / "model")
  levels = ((0.001, 1e-5), (0.05, 5e-4))
  kw = dict(levels=levels, datasets=["set12"], data_root=root, seed=0, progress=False,
            run_info={"checkpoint_metadata": meta})
  first = evaluate_realnoise(model, variables, output_dir=str(tmp_path / "a"), **kw)
  entries = first["datasets"]["set12"]
  assert list(entries) == ["a=0.001,b=1e-05", "a=0.05,b=0.0005"]
  assert entries["a=0.05,b=0.0005"]["mean_noisy_psnr"] < entries["a=0.001,b=1e-05"][
      "mean_noisy_psnr"] - 5  # more noise at the higher level
  for name, e in entries.items():
    assert e["num_done"] == 2 and np.isfinite(e["mean_psnr"])
  # Results are never replaced without --overwrite, nor mixed with another grid's.
  from n3jax.atomic import OutputExistsError
  with pytest.raises(OutputExistsError, match="complete results"):
    evaluate_realnoise(model, variables, output_dir=str(tmp_path / "a"), **kw)
  with pytest.raises(OutputExistsError, match="another evaluation"):
    evaluate_realnoise(model, variables, output_dir=str(tmp_path / "a"),
                       **{**kw, "levels": ((0.01, 1e-4),)})
  with pytest.raises(ValueError, match="repeats a level"):
    evaluate_realnoise(model, variables, **{**kw, "levels": ((0.01, 1e-4), (0.01, 1e-4))})
  on_disk = json.loads((tmp_path / "a" / "results.json").read_text())
  assert on_disk["levels"] == [[0.001, 1e-5], [0.05, 5e-4]] and on_disk["task"] == "realnoise"
  md = (tmp_path / "a" / "results.md").read_text()
  assert md.count("| set12 |") == 2 and "noisy input PSNR" in md


def test_denoise_cli_pg(realnoise_run, tmp_path, capsys):
  from PIL import Image
  from n3jax.denoise import main
  root, work, _, _ = realnoise_run
  src = tmp_path / "photo.png"
  rng = np.random.default_rng(0)
  Image.fromarray((rng.random((40, 44)) * 255).astype(np.uint8)).save(src)
  model = str(work / "straight" / "model")
  assert main([str(src), "--noise", "pg", "--a", "0.01", "--b", "0.0001",
               "--checkpoint", model, "--no-progress"]) == 0
  out = np.asarray(Image.open(tmp_path / "photo_denoised.png"))
  assert out.shape == (40, 44) and out.dtype == np.uint8
  assert "Poisson-Gaussian a=0.01, b=0.0001" in capsys.readouterr().out
  # The same as the Python function, and the noise map matters.
  from n3jax.checkpoint import load_model
  from n3jax.denoise import restore_poisson_gaussian
  net, variables, _ = load_model(model)
  noisy = np.asarray(Image.open(src), np.float32) / 255
  expected = restore_poisson_gaussian(net, variables, noisy, a=0.01, b=0.0001)
  np.testing.assert_array_equal(out, np.clip(np.round(expected * 255), 0, 255).astype(np.uint8))
  swapped = restore_poisson_gaussian(net, variables, noisy, a=0.0001, b=0.01)
  assert np.abs(swapped - expected).max() > 1e-4
  # A real-noise model in Gaussian mode is refused with what to do instead.
  assert main([str(src), "--checkpoint", model, "--overwrite"]) == 2
  assert "use --noise pg" in capsys.readouterr().err
  for argv, message in ((["--noise", "pg", "--a", "0.01"], "needs the noise parameters"),
                        (["--noise", "pg", "--a", "0.01", "--b", "0", "--sigma", "25"],
                         "--sigma is for Gaussian"),
                        (["--a", "0.01", "--b", "0"], "add --noise pg"),
                        (["--noise", "pg", "--a", "-1", "--b", "0"], "must be a finite")):
    with pytest.raises(SystemExit):
      main([str(src), "--checkpoint", model] + argv)
    assert message in capsys.readouterr().err
  # A model of another task is refused, naming it.
  from n3jax.checkpoint import save_model
  gauss = tmp_path / "gauss"
  net = create_model("dncnn17", depth=3, features=4)
  save_model(str(gauss), net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1))),
             name="dncnn17", kwargs={"depth": 3, "features": 4}, metadata={"sigma": 25})
  assert main([str(src), "--noise", "pg", "--a", "0.01", "--b", "0", "--checkpoint",
               str(gauss), "--overwrite"]) == 2
  assert "not a Poisson-Gaussian one" in capsys.readouterr().err


def test_release_training_set_refuses_a_silent_subset(tmp_path):
  from n3jax.data.records import source_items
  for folder in ("BSDS500/train", "BSDS500/test"):
    (tmp_path / folder).mkdir(parents=True)
    (tmp_path / folder / "1.jpg").write_bytes(b"")
  assert len(source_items("bsds400", str(tmp_path))) == 2
  with pytest.raises(FileNotFoundError, match="nothing matches DIV2K/DIV2K_train_HR"):
    source_items("bsds400_div2k_waterloo", str(tmp_path))


def test_installed_realnoise_model_is_found_and_its_absence_explained(tmp_path, monkeypatch,
                                                                      capsys):
  import json
  from n3jax import pretrained
  from n3jax.denoise import main
  monkeypatch.setenv("N3JAX_MODEL_DIR", str(tmp_path))
  assert pretrained.installed_realnoise() is None
  src = tmp_path / "x.png"
  from PIL import Image
  Image.fromarray(np.zeros((24, 24), np.uint8)).save(src)
  assert main([str(src), "--noise", "pg", "--a", "0.01", "--b", "0.0001"]) == 2
  err = capsys.readouterr().err
  assert "no Poisson-Gaussian" in err and "n3jax-convert 051_ckpt.t7 --install" in err
  for name, meta in (("a-gauss", {"sigma": 25}), ("b-mine", {"task": "realnoise"}),
                     ("n3net-pg", {"task": "realnoise"}), ("zz", {"task": "realnoise"})):
    (tmp_path / name).mkdir()
    (tmp_path / name / "model.json").write_text(json.dumps({"metadata": meta}))
  assert pretrained.installed_realnoise() == str(tmp_path / "n3net-pg")
  assert pretrained.installed_denoisers() == {25.0: str(tmp_path / "a-gauss")}
  (tmp_path / "n3net-pg" / "model.json").unlink()
  assert pretrained.installed_realnoise() == str(tmp_path / "b-mine")
