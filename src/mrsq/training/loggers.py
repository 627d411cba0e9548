"""Where train.csv and eval.csv rows also go: TensorBoard and Weights & Biases (``train.loggers``).

CSV is always written and stays the source of truth (resume, ``mrsq compare``, ``mrsq plot``);
``train.loggers: [csv, tensorboard, wandb]`` sends every row's numeric columns to the other
backends too, with the env step as the step: ``train/<column>`` for train.csv rows,
``eval/<column>`` for eval.csv rows. The resolved spec goes in as hyperparameters (flattened,
``critic.num_members``). Each backend is an optional extra (``pip install -e ".[tensorboard]"``,
``".[wandb]"``); one that is not installed is a one-line error before any work.

Resumed runs continue the same TensorBoard folder (``RUN/tensorboard``, opened with
``purge_step`` = the checkpoint's step + 1, so whatever the killed process logged after its last
checkpoint is hidden and written again) and the same W&B run (its id is kept in
``RUN/loggers.json``; rows after the checkpoint are sent again, as CSV writes them again). W&B
cannot delete: a SIGKILLed process's unflushed rows are simply lost from its buffer (measured:
an offline run killed mid-run had flushed nothing), and W&B keeps steps increasing, so a row it
already holds is not duplicated. SIGTERM / Ctrl-C stop at a checkpoint and finish the W&B run.

W&B runs offline (``RUN/wandb/offline-run-*``, ``wandb sync`` uploads them) unless the user has set
it up: ``WANDB_MODE`` in the environment is obeyed, an API key (``WANDB_API_KEY`` or a netrc
entry for api.wandb.ai) means online; it never prompts.

Why not torchrl's loggers (``torchrl.record.loggers``): its TensorBoard logger builds the
``SummaryWriter`` without ``purge_step`` (a resumed run would show the killed process's last
rows twice), and both it and its W&B logger log one scalar per call where a row is one call here.
The interface below is the few lines those two need.
"""

from __future__ import annotations

import importlib.util
import json
import math
import netrc
import os
import uuid
from pathlib import Path

LOGGERS = ("csv", "tensorboard", "wandb")
_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb"}  # what each backend imports
STATE_FILE = "loggers.json"


class LoggerUnavailableError(ValueError):
    """A logger named in ``train.loggers`` is not installed (one-line message)."""


def check_available(names) -> None:
    """Raise :class:`LoggerUnavailableError` for the first backend that cannot be imported."""
    for name in names:
        module = _MODULES.get(name)
        if module is not None and importlib.util.find_spec(module) is None:
            raise LoggerUnavailableError(
                f"train.loggers: {name!r} is not installed; install mrsq's extra: pip install -e \".[{name}]\" "
                f"(or pip install {module})")


def flatten(mapping: dict, prefix: str = "") -> dict:
    """``{"critic": {"num_members": 10}} -> {"critic.num_members": 10}``; lists become strings."""
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[name] = "None" if value is None else value
        else:
            out[name] = str(value)
    return out


def numeric(row: dict) -> dict[str, float]:
    """The row's finite numeric columns but ``step`` (what a backend plots)."""
    out = {}
    for key, value in row.items():
        if key == "step" or isinstance(value, bool) or value is None or value == "":
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


class TensorBoard:
    name = "tensorboard"

    def __init__(self, out: Path, hparams: dict, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=purge)
        if resume_step is None:  # the resolved spec, one `key: value` per line (add_hparams would
            # write a second event file per call; the text tab is enough to see a run's settings)
            self.writer.add_text("spec", "\n".join(f"    {k}: {v}" for k, v in hparams.items()), global_step=0)

    def log(self, kind: str, row: dict, step: int) -> None:
        for key, value in numeric(row).items():
            self.writer.add_scalar(f"{kind}/{key}", value, global_step=step)
        self.writer.flush()

    def video(self, path: Path, step: int) -> None:
        """TensorBoard plays no mp4 (its add_video re-encodes tensors as GIF through moviepy, which
        mrsq does not install): the video stays in RUN/videos/ only."""

    def close(self) -> None:
        self.writer.close()


def wandb_mode() -> str:
    """``WANDB_MODE`` if set; ``online`` when an API key is configured; else ``offline``."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


class WandB:
    name = "wandb"

    def __init__(self, out: Path, hparams: dict, state: dict, project: str) -> None:
        import wandb

        if "id" not in state:
            state["id"] = uuid.uuid4().hex[:12]  # W&B run ids: lowercase letters and digits
        mode = wandb_mode()
        try:
            self.run = wandb.init(project=project, name=out.name, id=state["id"], resume="allow", dir=str(out),
                                  config=hparams, mode=mode, reinit="create_new",
                                  settings=wandb.Settings(silent=True, console="off", quiet=True))
        except Exception as exc:  # noqa: BLE001 - a network or account problem: one line, before any step
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise LoggerUnavailableError(f"train.loggers: wandb could not start in mode {mode!r} ({first}); "
                                         "WANDB_MODE=offline logs locally") from None

    def log(self, kind: str, row: dict, step: int) -> None:
        self.run.log({f"{kind}/{k}": v for k, v in numeric(row).items()}, step=step)

    def video(self, path: Path, step: int) -> None:
        import wandb

        self.run.log({"eval/video": wandb.Video(str(path), format="mp4")}, step=step)

    def close(self) -> None:
        self.run.finish()


class Loggers:
    """The run's extra backends (CSV is written by the trainer itself)."""

    def __init__(self, names, out: Path, spec_dump: dict, resume_step: int | None, project: str = "mrsq") -> None:
        check_available(names)
        self.out = Path(out)
        hparams = flatten(spec_dump)
        path = self.out / STATE_FILE
        self.state = json.loads(path.read_text()) if resume_step is not None and path.is_file() else {}
        self.backends = []
        for name in dict.fromkeys(names):
            if name == "tensorboard":
                self.backends.append(TensorBoard(self.out, hparams, resume_step))
            elif name == "wandb":
                self.backends.append(WandB(self.out, hparams, self.state.setdefault("wandb", {}), project))
        if self.state:
            tmp = self.out / (STATE_FILE + ".tmp")
            tmp.write_text(json.dumps(self.state))
            tmp.replace(path)

    def log(self, kind: str, row: dict, step: int) -> None:
        for backend in self.backends:
            backend.log(kind, row, step)

    def video(self, path: Path, step: int) -> None:
        """An evaluation video to the backends that show videos (W&B)."""
        for backend in self.backends:
            backend.video(path, step)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
        self.backends = []
