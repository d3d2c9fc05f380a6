"""How long a training run takes to save and exit after SIGTERM (a preemption).

  python bench/preemption.py --after-steps 20 --workdir /tmp/pre -- \
      python train.py --config=configs/sisr.py --workdir=/tmp/pre

Starts the command, waits until its progress bar has counted ``--after-steps`` steps, sends
SIGTERM, and prints (as JSON) the seconds from the signal to the exit, the exit status, the
step the bar showed at the signal and the checkpoints in ``WORKDIR/checkpoints`` afterwards.
Kubernetes and SLURM give about 30 s between SIGTERM and SIGKILL.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

BAR = re.compile(rb"train:.*?\|\s*(\d+)/(\d+)")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--after-steps", type=int, default=20)
  parser.add_argument("--workdir", required=True, help="the command's --workdir")
  parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait in all")
  parser.add_argument("--json", default="", help="also write the figures here")
  parser.add_argument("command", nargs=argparse.REMAINDER)
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  start = time.perf_counter()
  proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
  state = {"step": None, "tail": b""}

  def read():
    buf = b""
    while True:
      chunk = proc.stderr.read1(4096)
      if not chunk:
        return
      buf = (buf + chunk)[-4096:]
      for part in re.split(rb"[\r\n]", buf):
        m = BAR.search(part)
        if m:
          state["step"] = int(m.group(1))
      state["tail"] = buf

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  while (state["step"] or 0) < args.after_steps:
    if proc.poll() is not None:
      print(state["tail"].decode(errors="replace"), file=sys.stderr)
      raise SystemExit(f"the run ended (status {proc.returncode}) before step {args.after_steps}")
    if time.perf_counter() - start > args.timeout:
      proc.kill()
      raise SystemExit("timed out waiting for the progress bar")
    time.sleep(0.1)
  at_signal = state["step"]
  signalled = time.perf_counter()
  proc.send_signal(signal.SIGTERM)
  try:
    proc.wait(timeout=args.timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise SystemExit("the run did not exit after SIGTERM")
  reader.join(timeout=5)
  seconds = time.perf_counter() - signalled
  ckpt_dir = os.path.join(args.workdir, "checkpoints")
  saved = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit()) if os.path.isdir(
      ckpt_dir) else []
  result = {"command": command, "seconds_from_sigterm_to_exit": round(seconds, 2),
            "exit_status": proc.returncode, "bar_step_at_signal": at_signal,
            "seconds_before_signal": round(signalled - start, 1), "checkpoints": saved}
  print(json.dumps(result, indent=2))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
