"""The data-parallel training loop: ``train_and_evaluate(config, workdir)``.

One process per host, ``jax.pmap`` over its local devices; with several processes,
``jax.distributed`` connects them and each host reads its own shard of every global batch.
The config is checked before anything is built (:mod:`n3jax.train.config_check`). The loop
resumes from the newest good checkpoint in ``WORKDIR/checkpoints`` (setting aside
unreadable or non-finite ones), saves every ``config.checkpoint_every`` steps, at the end,
and on SIGTERM/SIGINT before exiting, and stops with an error on a non-finite loss or
state (which is never saved). Batches are copied to the devices ahead of their step by
the prefetch thread (double-buffered with ``config.prefetch = 2``). The host runs at most
:data:`MAX_STEPS_IN_FLIGHT` steps ahead of the device, so that a signal is answered
within about two steps; it waits for nothing else except at log, checkpoint and
validation steps, and the device always has the next step queued. It writes
TensorBoard events, ``metrics.json`` (the latest validation) and, at the end,
``WORKDIR/model`` (an n3jax model directory that ``eval.py --checkpoint`` reads).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from n3jax import checkpoint as model_io
from n3jax.data import pipeline
from n3jax.data.images import default_data_root
from n3jax.nn import create_model, model_fields
from n3jax.nn.precision import compute_dtype
from n3jax.tasks import task_of
from n3jax.train import checkpoints, optim
from n3jax.train.config_check import validate_config
from n3jax.train.state import TrainState, create_train_state
from n3jax.train.step import AXIS
from n3jax.train.summaries import SummaryWriter

log = logging.getLogger(__name__)

MODEL_DIR = "model"
# Steps dispatched but not finished. Without a bound the host queues hundreds of steps
# (dispatch is asynchronous), and a SIGTERM waits for all of them before the save.
MAX_STEPS_IN_FLIGHT = 2


class TrainingInterrupted(Exception):
  """Raised after a SIGTERM/SIGINT once the state is saved; ``signum`` says which."""

  def __init__(self, signum: int, step: int):
    super().__init__(f"interrupted by signal {signum} at step {step}; state saved, "
                     "run again with the same --workdir to resume")
    self.signum = signum
    self.step = step


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """``jax.distributed.initialize`` when ``config.distributed.num_processes > 1``.

  Must run before anything touches a JAX backend.
  """
  dist = config.distributed
  if dist.num_processes <= 1:
    return
  if dist.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", dist.cpu_collectives)
  jax.distributed.initialize(coordinator_address=dist.coordinator_address,
                             num_processes=dist.num_processes, process_id=dist.process_id,
                             local_device_ids=dist.local_device_ids or None)


def unreplicate(tree: Any) -> Any:
  """Host numpy copy of the first local replica of a pmapped pytree."""
  def first(x):
    data = np.asarray(x.addressable_shards[0].data)
    return data if data.shape == x.shape[1:] else data[0]
  return jax.tree_util.tree_map(first, tree)


def replicate(tree: Any) -> Any:
  """Copies ``tree`` to every local device, laid out as ``pmap`` outputs are.

  (Placing it like the step's own outputs avoids a second compilation of the step.)
  """
  num = jax.local_device_count()
  stacked = jax.tree_util.tree_map(lambda x: np.stack([np.asarray(x)] * num), tree)
  return jax.pmap(lambda x: x, axis_name=AXIS)(stacked)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[Dict[str, Optional[int]]]:
  """Turns SIGTERM/SIGINT into a flag the loop checks between steps (main thread only)."""
  flag: Dict[str, Optional[int]] = {"signum": None}
  if threading.current_thread() is not threading.main_thread():
    yield flag
    return

  def handler(signum, frame):
    del frame
    if flag["signum"] is not None:  # a second signal: give up immediately
      raise KeyboardInterrupt
    flag["signum"] = signum
    log.warning("signal %d: saving a checkpoint after the current step", signum)

  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield flag
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def _due(done: int, every: int) -> bool:
  """Whether periodic work of period ``every`` (0: off) falls on step ``done``."""
  return every > 0 and done % every == 0


def _agree_on_stop(local: bool, num_processes: int) -> bool:
  """Whether any process was asked to stop; every process gets the same answer.

  With several hosts a preemption signal may reach only some of them; each step they
  exchange their flags (one tiny all-gather), so all of them save the same step and exit.
  """
  if num_processes == 1:
    return local
  from jax.experimental import multihost_utils
  flags = multihost_utils.process_allgather(np.asarray(local, np.int32))
  return bool(np.max(flags))


def _init_variables(config) -> Optional[Dict[str, Any]]:
  if not config.init_checkpoint:
    return None
  _, variables, meta = model_io.load_model(config.init_checkpoint)
  if meta.get("model_name") != config.model.name:
    raise ValueError(f"init_checkpoint {config.init_checkpoint} holds a "
                     f"{meta.get('model_name')!r} model, the config trains {config.model.name!r}")
  log.info("initializing from %s", config.init_checkpoint)
  return variables


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains ``config.model`` for ``config.num_train_steps`` steps in ``workdir`` (resuming).

  Returns:
    a summary: ``{"step", "train_loss" (per logged step), "val" (per validation), ...}``
    with the losses of every logged step, so that tests can assert on them.

  Raises:
    ConfigError: a config value is out of range (before anything is built).
    FloatingPointError: the loss or the state became NaN/inf; nothing non-finite is saved,
      so the workdir resumes from its last good checkpoint.
    WorkdirMismatchError: the workdir holds checkpoints of another model.
    TrainingInterrupted: SIGTERM/SIGINT arrived; the state at the current step was saved.
  """
  validate_config(config)  # the task's name and its fields too
  task = task_of(config)
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise OSError(f"--workdir {workdir}: cannot make the folder ({e.strerror or e})") from None
  maybe_initialize_distributed(config)
  checkpoints.check_workdir_model(workdir, config.model.name, config.model.kwargs)
  process, num_processes = jax.process_index(), jax.process_count()
  num_local = jax.local_device_count()
  num_devices = jax.device_count()
  if config.batch_size % num_devices:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by the {num_devices} "
                     "devices")
  per_device = config.batch_size // num_devices
  total_steps = config.num_train_steps if config.num_train_steps > 0 else (
      config.num_epochs * config.steps_per_epoch)

  root = config.data_root or default_data_root()
  source, train_set = task.training_source(config, root)
  # BatchNorm statistics are averaged over all devices (models without BN ignore this).
  sync_bn = {"bn_axis_name": AXIS} if "bn_axis_name" in model_fields(config.model.name) else {}
  precision = {"dtype": compute_dtype(config.get("dtype", "float32"))}
  model = create_model(config.model.name, **config.model.kwargs, **sync_bn, **precision)
  eval_model = create_model(config.model.name, **config.model.kwargs, **precision)
  tx = optim.make_optimizer(config)
  schedule = optim.schedule_from_config(config)
  state = create_train_state(model, tx, key=jax.random.PRNGKey(config.train_seed),
                             image_shape=task.input_shape(config),
                             init_variables=_init_variables(config))
  manager = checkpoints.make_manager(workdir, keep=config.keep_checkpoints)
  restored = checkpoints.restore_latest(manager, state)
  if restored is not None:
    state = restored
    log.info("resuming from step %d in %s", int(state.step), workdir)
  start = int(state.step)

  writer = SummaryWriter(workdir, enabled=process == 0)
  run_validation = (task.make_validation(eval_model, config, root) if config.val_every
                    else None)
  p_step = task.make_p_step(model, config)
  p_state = replicate(state)
  del state

  def host_batch(step: int):
    batch = task.host_batch(source, step, config, shard_index=process,
                            num_shards=num_processes)
    return jax.tree_util.tree_map(
        lambda x: x.reshape(num_local, per_device, *x.shape[1:]), batch)

  summary: Dict[str, Any] = {"start_step": start, "train_loss": {}, "val": {},
                             "num_devices": num_devices, "num_processes": num_processes,
                             "workdir": workdir}
  pending: List[Tuple[int, Any]] = []
  in_flight: Deque[Any] = collections.deque()
  last_val: Dict[str, Any] = {}
  t_log = time.perf_counter()

  def flush(step: int) -> Optional[Dict[str, float]]:
    """Fetches pending metrics (one host sync), logs them, stops on a non-finite loss."""
    nonlocal t_log
    if not pending:
      return None
    fetched = [(s, unreplicate(m)) for s, m in pending]
    pending.clear()
    for s, m in fetched:
      summary["train_loss"][s] = float(m["loss"])
      if not math.isfinite(float(m["loss"])):
        raise FloatingPointError(
            f"non-finite training loss {float(m['loss'])} at step {s}; the last checkpoint in "
            f"{workdir} is from before it. Lower the learning rate or check the data.")
    now = time.perf_counter()
    means = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[0][1]}
    means["steps_per_second"] = len(fetched) / max(now - t_log, 1e-9)
    means["learning_rate"] = float(schedule(step))
    t_log = now
    writer.scalars(step, means, prefix="train/")
    return means

  def save(step_state) -> None:
    checkpoints.save(manager, step_state)

  # Batches are copied to the devices by the prefetch thread, `prefetch` steps ahead, in
  # the layout the step takes (pmap's: split over the local devices along the first axis),
  # so a transfer overlaps the steps before it.
  batch_sharding = jax.tree_util.tree_leaves(p_state)[0].sharding

  def device_batch(step: int):
    return jax.device_put(host_batch(step), batch_sharding)

  bar = tqdm(total=total_steps, initial=start, desc="train", unit="step",
             disable=not config.progress or process != 0)
  steps = iter(range(start, total_steps))
  batches = pipeline.prefetch(device_batch, steps, depth=config.prefetch)
  step = start
  try:
    with _stop_on_signals() as stop:
      stop_requested = lambda: stop["signum"] is not None  # noqa: E731
      for step, batch in batches:
        p_state, step_metrics = p_step(p_state, batch)
        pending.append((step, step_metrics))
        in_flight.append(step_metrics["loss"])
        if len(in_flight) >= MAX_STEPS_IN_FLIGHT:  # wait for the older step to finish
          jax.block_until_ready(in_flight.popleft())
        done = step + 1
        bar.update(1)
        last = done == total_steps
        interrupted = _agree_on_stop(stop_requested(), num_processes)
        ckpt_due = last or interrupted or _due(done, config.checkpoint_every)
        if last or interrupted or ckpt_due or _due(done, config.log_every):
          means = flush(done)
          if means:
            bar.set_postfix(**{"loss": f"{means['loss']:.4g}", task.progress_metric:
                               f"{means[task.progress_metric]:.4g}"})
        if ckpt_due:
          save(unreplicate(p_state))
        if run_validation and not interrupted and (last or _due(done, config.val_every)):
          variables = unreplicate({"params": p_state.params,
                                   "batch_stats": p_state.batch_stats})
          # A signal during validation ends it (the state is saved just after).
          val = run_validation(variables, stop_requested if num_processes == 1 else
                               lambda: False)
          if val is None:
            interrupted = True
            save(unreplicate(p_state))
          else:
            last_val = {"step": done, **val}
            summary["val"][done] = last_val
            writer.scalars(done, {k: v for k, v in last_val.items() if k.startswith("val_")},
                           prefix="val/")
            writer.write_metrics_json({**last_val, "train_loss": summary["train_loss"][step]})
            log.info("step %d: %s", done, task.summary_line(last_val))
        if interrupted:
          raise TrainingInterrupted(stop["signum"] or signal.SIGTERM, done)
  finally:
    # Whatever ends the loop (a signal, a second Ctrl-C, an error), a save in progress
    # completes first.
    bar.close()
    writer.close()
    manager.wait_until_finished()
  final = unreplicate(p_state)
  summary["step"] = int(final.step)
  # Every process takes part (orbax synchronizes them); the files are the same.
  # The run's own export: replaced whenever the run ends again.
  model_io.save_model(os.path.join(workdir, MODEL_DIR),
                      {"params": final.params, "batch_stats": final.batch_stats},
                      name=config.model.name, kwargs=dict(config.model.kwargs), overwrite=True,
                      metadata={**task.export_metadata(config),
                                "task": task.name, "step": int(final.step),
                                "train_set": train_set,
                                **{k: v for k, v in last_val.items()
                                   if k.startswith("val_") and k != "val_images"}})
  summary["final_state"] = final
  return summary
