"""The ``mrsq`` command line: train, show, list, eval, bench.

Errors a user can cause (bad YAML, unknown names, wrong env ids, corrupt checkpoints, an output
folder that already holds a run) print one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "disable")

# the user-error plumbing lives in mrsq.errors (cli, sweep and diagnose all use it); these names
# stay importable from here
from mrsq.errors import UsageError, check_user_env, import_checked  # noqa: E402
from mrsq.errors import user_errors as _user_errors  # noqa: E402




def _add_spec_args(p: argparse.ArgumentParser, optional: bool = False) -> None:
    p.add_argument("source", nargs="?" if optional else None,
                   help="preset name (see `mrsq list preset`) or path to a YAML spec")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set critic.num_members=5 (repeatable)")
    p.add_argument("--env", help="environment id, e.g. dmc:cheetah-run or gym:Hopper-v5 (train.env)")
    p.add_argument("--steps", type=int, help="environment steps (train.steps)")
    p.add_argument("--seed", type=int, help="random seed (train.seed)")
    p.add_argument("--eval-every", type=int, help="evaluate every K steps (train.eval_every)")
    p.add_argument("--eval-episodes", type=int, help="episodes per evaluation (train.eval_episodes)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a module that registers your own components (repeatable)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch threads (train.threads; default: torch's choice, all cores). Use 1 per job when "
                        "several jobs share a machine: two 2-thread jobs on 2 cores run 6-8x slower than 1-thread ones")


def _load_spec(args):
    from mrsq import specs

    if args.source and Path(args.source).name == "spec.yaml":  # a run folder's spec: its modules too
        recorded = _run_json(Path(args.source).parent).get("imports") or []
        args.imports = list(dict.fromkeys([*recorded, *args.imports]))
    import_checked(args.imports)
    overrides = list(args.overrides)
    for flag, key in (("env", "env"), ("steps", "steps"), ("seed", "seed"), ("threads", "threads"),
                      ("eval_every", "eval_every"), ("eval_episodes", "eval_episodes")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"train.{key}={value}")
    return specs.load(args.source, overrides)


EXIT_DIVERGED = 3  # a non-finite loss or parameter stopped the run (retrying would diverge again)


def cmd_train(args) -> int:
    held: list = []  # the run folder's lock, taken before a fresh run touches the folder
    try:
        return _train(args, held)
    finally:
        for lock in held:
            lock.release()


def _train(args, held: list) -> int:
    from mrsq.envs import parse_env_id
    from mrsq.training.lock import acquire
    from mrsq.training import Trainer
    from mrsq.training.loop import NonFiniteError

    if args.fresh_replay is not None and not args.resume:
        raise UsageError("--fresh-replay continues a run: use it with --resume RUN_FOLDER")
    if args.resume:
        given = [flag for flag, value in (("SOURCE", args.source), ("--set", args.overrides), ("--env", args.env),
                                          ("--steps", args.steps), ("--seed", args.seed), ("--out", args.out),
                                          ("--eval-every", args.eval_every), ("--eval-episodes", args.eval_episodes))
                 if value]
        if given:
            raise UsageError(f"--resume {args.resume}: the run's spec comes from its checkpoint; drop {', '.join(given)}")
        from mrsq import registry

        registry.import_modules(args.imports)  # a run built from the user's own components needs them again
        if args.fresh_replay is not None and args.fresh_replay < 1:
            raise UsageError(f"--fresh-replay {args.fresh_replay}: refill with at least 1 warm-up step")
        trainer = Trainer.resume(Path(args.resume), progress=not args.no_progress, detect_anomaly=args.detect_anomaly,
                                 fresh_replay=args.fresh_replay)
        out, spec, s = trainer.out, trainer.spec, trainer.state
        _set_threads(args.threads)  # another thread count than the run's: correct, but no longer bit-exact
        if s.step >= spec.train.steps and not s.pending_eval:
            trainer.run()  # marks run.json done
            print(f"mrsq: {out} is already complete ({s.step} steps); nothing to do", file=sys.stderr)
            return 0
        print(f"mrsq: resuming {out} from {trainer.resumed_from.name} at step {s.step} of {spec.train.steps}"
              + (" (evaluation pending)" if s.pending_eval else ""), file=sys.stderr)
    else:
        if args.source is None:
            raise UsageError("train needs a preset name or YAML spec (or --resume RUN_FOLDER)")
        spec = _load_spec(args)
        parse_env_id(spec.train.env)
        check_user_env(spec.train.env)
        _check_device(spec.train.device)
        out = Path(args.out) if args.out else _default_out(args.source, spec)
        created = not out.exists()
        _check_out_folder(out)
        held.append(acquire(out))  # a second writer stops here, before anything is cleared or written
        _clear_failed_start(out)
        if (out / "checkpoint.pt").exists() or (out / "eval.csv").exists():
            raise UsageError(f"--out {out}: already holds a run; continue it with `mrsq train --resume {out}` or "
                             "choose another folder (nothing was overwritten)")
        try:
            trainer = Trainer(spec, out, progress=not args.no_progress, preset=_preset_name(args.source),
                              detect_anomaly=args.detect_anomaly, imports=list(dict.fromkeys(args.imports)))
        except BaseException:
            held.pop().release()  # (removes the lock file)
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()  # leave no trace of a run that never started
            raise
        print(f"mrsq: training {_preset_name(args.source)} on {spec.train.env} (seed {spec.train.seed}, "
              f"{spec.train.steps} steps) -> {out}", file=sys.stderr)
    print(f"mrsq: {trainer.runtime.summary()}", file=sys.stderr)
    if trainer.runtime.compile:
        print("mrsq: the first updates and actions compile (1-3 min on a CPU the first time on a machine, "
              "cached afterwards; --set compile=off skips it)", file=sys.stderr)
    try:
        result = trainer.run()
    except NonFiniteError as exc:
        print(f"mrsq: error: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    if result.already_complete:
        print(f"mrsq: {out} is already complete ({result.steps} steps); nothing to do", file=sys.stderr)
        return 0
    last = f"{result.evals[-1][1]:.1f} at step {result.evals[-1][0]}" if result.evals else "none"
    status = "interrupted" if result.interrupted else "done"
    compiled = trainer.compile_seconds()
    resume = f"; continue with: mrsq train --resume {out}" if result.interrupted else ""
    print(f"mrsq: {status} after {result.steps} steps; last eval return {last}; results in {out}/ "
          f"(spec.yaml, run.json, eval.csv, train.csv, checkpoint.pt)"
          + (f"; compilation took {compiled:.0f} s" if compiled else "") + resume, file=sys.stderr)
    return 130 if result.interrupted else 0


def _set_threads(threads: int | None) -> None:
    """``--threads N``: torch's thread count for this process (None: leave torch's choice)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _check_device(device: str) -> str:
    """``train.device: cuda`` on a machine without CUDA: one line now, not a traceback later."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("train.device is cuda, but torch sees no CUDA device here (use auto or cpu)")
    return device


def _check_out_folder(out: Path) -> None:
    """The run folder must be a folder we can create and write, before any work is done."""
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == out else f"is below the file {parent}"
            raise UsageError(f"--out {out}: {where}; give a folder")
    try:  # create it now and prove it writable: failing here costs nothing
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".mrsq-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create or write it ({exc.strerror or exc})") from None


def _run_json(folder: Path) -> dict:
    from mrsq.runs import read_run_json

    return read_run_json(folder)


def _clear_failed_start(out: Path) -> None:
    """A run that failed before its first checkpoint left nothing worth keeping: let --out reuse
    the folder (its files are replaced; anything else in it is left alone)."""
    has_checkpoint = any((out / name).exists() for name in ("checkpoint.pt", "checkpoint.prev.pt"))
    if _run_json(out).get("status") == "failed" and not has_checkpoint:
        import shutil

        for name in ("eval.csv", "train.csv", "spec.yaml", "run.json"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "replay", ignore_errors=True)
        print(f"mrsq: {out} held a run that failed before its first checkpoint; starting over in it",
              file=sys.stderr)


def _preset_name(source: str) -> str:
    """The label of a run: the preset's name, or the YAML file's stem; rerunning a run folder's
    ``spec.yaml`` keeps the preset that run came from (its ``run.json``)."""
    path = Path(source)
    if path.name == "spec.yaml":
        preset = _run_json(path.parent).get("preset")
        if preset:
            return str(preset)
    return path.stem


def _default_out(source: str, spec) -> Path:
    env = spec.train.env.replace(":", "-").replace("/", "-")
    return Path("runs") / f"{_preset_name(source)}_{env}_s{spec.train.seed}_{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_show(args) -> int:
    from mrsq import specs

    spec = _load_spec(args)
    if spec.unresolved():  # env-dependent defaults: their values for train.env (what a run would use)
        from mrsq.envs import make_env, parse_env_id

        parse_env_id(spec.train.env)
        check_user_env(spec.train.env)
        with make_env(spec.train.env, spec.train.seed) as env:
            spec = spec.for_env(env)
    sys.stdout.write(specs.to_yaml(spec))
    return 0


def cmd_list(args) -> int:
    from mrsq import registry, specs

    import mrsq.components  # noqa: F401

    registry.import_modules(args.imports)
    specs.register_builtin_presets()
    families = registry.FAMILIES
    if args.family:
        if args.family not in families:
            raise UsageError(registry.unknown_message("family", args.family, sorted(families)))
        families = {args.family: families[args.family]}
    for name, reg in families.items():
        print(f"{name}:")
        width = max((len(n) for n in reg.names()), default=0)
        for entry in reg.names():
            print(f"  {entry:<{width}}  {reg.help(entry)}".rstrip())
            if args.family and name != "preset":  # one family: each component's fields too
                for line in _field_lines(reg.spec(entry)):
                    print(f"      {line}")
    return 0


def _field_lines(spec_cls) -> list[str]:
    """``name: type = default  # description`` for each field of a component's spec."""
    import typing

    from pydantic import BaseModel

    if spec_cls is None or not hasattr(spec_cls, "model_fields"):
        return []
    lines = []
    for field_name, f in spec_cls.model_fields.items():
        if field_name == "type":
            continue
        default = f.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = default.model_dump()
        if typing.get_origin(f.annotation) is typing.Literal:
            kind = "|".join(map(str, typing.get_args(f.annotation)))
        else:
            kind = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
        lines.append(f"{field_name}: {kind} = {default!r}" + (f"  # {f.description}" if f.description else ""))
    return lines


def cmd_eval(args) -> int:
    from mrsq import specs
    from mrsq.envs import make_env
    from mrsq.training.checkpoint import env_dims, load_checkpoint
    from mrsq.training.loop import build_agent, evaluate, resolve_device

    if args.episodes < 1:
        raise UsageError(f"--episodes {args.episodes}: evaluate at least one episode")
    _set_threads(args.threads)
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed {args.seed}: must be in [0, 2**32)")
    if args.video:
        from mrsq.render import RenderError, ensure_backend

        if not str(args.video).endswith(".mp4"):
            raise UsageError(f"--video {args.video}: videos are written as mp4; name the file *.mp4")
        if args.video_size < 16 or args.video_size % 2:
            raise UsageError(f"--video-size {args.video_size}: an even number of pixels, at least 16")
        try:
            ensure_backend()  # before MuJoCo is imported: it reads MUJOCO_GL once
        except RenderError as exc:
            raise UsageError(f"--video: {exc}") from None
    from mrsq import registry

    payload = load_checkpoint(Path(args.checkpoint))
    recorded = (payload.get("extra") or {}).get("imports") or []
    registry.import_modules([*recorded, *args.imports])  # the run's own components
    spec = specs.from_yaml(payload["spec"], where=f"{args.checkpoint} (spec)")
    env_id = args.env or spec.train.env
    env = make_env(env_id, spec.train.seed + 100 if args.seed is None else args.seed)
    trained = env_dims(payload)
    if trained and (env.obs_dim, env.action_dim) != trained:
        raise UsageError(f"--env {env_id}: observations of {env.obs_dim} and actions of {env.action_dim}, but "
                         f"{args.checkpoint} was trained on {spec.train.env} with {trained[0]} and {trained[1]}")
    agent = build_agent(spec, env, resolve_device(_check_device(spec.train.device)))
    try:
        agent.load_training_state(payload["agent"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:  # a forged or foreign agent state
        raise UsageError(f"{args.checkpoint}: weights do not match its spec ({str(exc).splitlines()[0][:200]})") from None
    ev = evaluate(agent, env, args.episodes, progress=not args.no_progress)
    print(f"{env_id}: return {ev.return_mean:.1f} +- {ev.return_std:.1f} over {args.episodes} episodes "
          f"(checkpoint step {payload['step']})")
    d = ev.diagnostics
    if d.get("value_states"):
        print(f"  value error {d['value_error_pct']:+.1f}% (|Q-G| {d['value_error_abs']:.2f}, "
              f"Q > G on {100 * d['overestimation_frac']:.0f}% of {d['value_states']} states), "
              f"search divergence {d['search_divergence']:.4f}")
    if args.video:
        from mrsq.render import RenderError, record_episode

        video_seed = (spec.train.seed + 100 if args.seed is None else args.seed) + 1
        try:
            with make_env(env_id, video_seed) as video_env:
                made = record_episode(agent, video_env, Path(args.video), args.video_size)
        except RenderError as exc:
            raise UsageError(f"--video: {exc}") from None
        print(f"mrsq: wrote {made['path']} ({made['frames']} frames of {made['size']}x{made['size']} at "
              f"{made['fps']:g} fps: one more deterministic episode of {made['steps']} steps, return "
              f"{made['return']:.1f})")
    return 0


def cmd_bench(args) -> int:
    from mrsq import bench

    return bench.main(args)


PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def cmd_plot(args) -> int:
    from mrsq.plot import plot_runs

    target = Path(args.out)
    if target.is_dir():
        raise UsageError(f"--out {target}: is a folder; give a file name such as {target / 'curves.png'}")
    if target.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(f"--out {target}: unsupported image type {target.suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(PLOT_SUFFIXES)}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {target}: cannot create its folder ({exc.strerror or exc})") from None
    out = plot_runs([Path(r) for r in args.runs], Path(args.out), title=args.title, labels=args.label)
    print(f"mrsq: wrote {out}")
    return 0


def cmd_compare(args) -> int:
    from mrsq.compare import compare_tables

    print(compare_tables([Path(r) for r in args.runs], labels=args.label, reps=args.reps))
    return 0


def cmd_frontier(args) -> int:
    from mrsq import frontier

    _set_threads(args.threads)
    if args.out and Path(args.out).suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(f"--out {args.out}: unsupported image type; use one of {', '.join(PLOT_SUFFIXES)}")
    result = frontier.frontier([Path(r) for r in args.runs], reference=args.reference, labels=args.label)
    print(frontier.table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"mrsq: wrote {args.json}")
    if args.out:
        print(f"mrsq: wrote {frontier.plot(result, Path(args.out))}")
    return 0


def cmd_diagnose(args) -> int:
    from mrsq import diagnose

    _set_threads(args.threads)
    one_shot = args.analysis == "overestimation"
    for name, nchain, over in (("horizon", 3, 1), ("samples", 16, 64), ("trials", 1000, 500)):
        if getattr(args, name) is None:
            setattr(args, name, over if one_shot else nchain)
    return diagnose.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrsq", description="Search-based model-based RL from composable parts.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an agent; writes spec.yaml, eval.csv, train.csv, checkpoint.pt; "
                                     "--resume continues a run folder exactly")
    _add_spec_args(p, optional=True)
    p.add_argument("--out", help="run folder (default: runs/<preset>_<env>_s<seed>_<time>)")
    p.add_argument("--resume", metavar="RUN_FOLDER",
                   help="continue this run folder from its last checkpoint (falls back to the previous one if "
                        "the last is damaged); the spec comes from the checkpoint")
    p.add_argument("--fresh-replay", nargs="?", type=int, const=1000, default=None, metavar="N",
                   help="with --resume, when the replay segments are damaged or lost: continue from the "
                        "checkpoint's weights and optimisers with an empty buffer refilled by N random warm-up "
                        "steps (default 1000); no longer an exact continuation (recorded in run.json)")
    p.add_argument("--detect-anomaly", action="store_true",
                   help="debugging: torch autograd anomaly mode and a non-finite check every step (slow)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    from mrsq import sweep

    p = sub.add_parser("sweep", help="presets x envs x seeds (x --set grids) as Ray tasks, locally or on a cluster; "
                                     "rerunning skips finished runs and resumes the others")
    sweep.add_arguments(p)
    p.set_defaults(func=sweep.main)

    p = sub.add_parser("show", help="print the fully resolved spec (env-dependent defaults for train.env / --env)")
    _add_spec_args(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("list", help="list registered components (all families or one)")
    p.add_argument("family", nargs="?", help="encoder, pixel_encoder, critic, aggregator, policy, planner, agent, env or preset")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("eval", help="evaluate a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--env", help="evaluate on another env id than the one trained on")
    p.add_argument("--seed", type=int, help="eval env seed (default: train seed + 100)")
    p.add_argument("--video", metavar="OUT.mp4", help="also record one more deterministic episode as an mp4 "
                                                     "(needs a renderer: libosmesa6, or MUJOCO_GL=egl on a GPU)")
    p.add_argument("--video-size", type=int, default=256, help="video width and height in pixels (default 256)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's choice)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="a module with your own components (those recorded in the checkpoint are imported anyway)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("plot", help="learning curves (+ value error, divergence) of run folders, grouped "
                                    "by preset and env, mean and +-std band over seeds, into a PNG")
    p.add_argument("runs", nargs="+", help="run folders (each with eval.csv and spec.yaml)")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--title", default="")
    p.add_argument("--label", action="append", help="preset label per run (default: the run's preset)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("compare", help="markdown table per env: final return, IQM, AUC, value error over seeds")
    p.add_argument("runs", nargs="+", help="run folders (each with eval.csv and spec.yaml)")
    p.add_argument("--label", action="append", help="preset label per run (default: the run's preset)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples for the IQM interval")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("frontier", help="per variant: counted FLOPs per env step (and in the critics) relative to "
                                        "a reference, against value bias, overestimation and return over seeds")
    p.add_argument("runs", nargs="+", help="run folders or sweep folders")
    p.add_argument("--reference", default="mrsq_small", help="variant the FLOPs are relative to (default "
                                                             "mrsq_small; the first variant if absent)")
    p.add_argument("--label", action="append", help="label per run folder (default: its preset / sweep variant)")
    p.add_argument("--out", help="image of the frontier (x: FLOPs relative; y: value bias, return)")
    p.add_argument("--json", help="also write the figures as JSON here")
    p.add_argument("--threads", type=int, help="torch threads while counting")
    p.set_defaults(func=cmd_frontier)

    p = sub.add_parser("diagnose", help="the paper's analyses. nchain: search on the N-chain (random shooting, or "
                                        "--planner); overestimation: a search's bias where the true values are exact")
    p.add_argument("analysis", choices=["nchain", "overestimation"])
    p.add_argument("--planner", default="random_shooting", help="the search (a registered planner: random_shooting, "
                                                                "mppi, cem, icem, ...)")
    p.add_argument("--set", dest="planner_set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a planner spec field, e.g. --set iterations=3 (repeatable)")
    p.add_argument("--actions", type=int, default=4, help="nchain: A, choices per step")
    p.add_argument("--horizon", type=int, default=None, help="n: chain length = search horizon (nchain, default 3); "
                                                             "overestimation: planning horizon (default 1)")
    p.add_argument("--samples", type=int, default=None, help="m: sequences sampled per search (per iteration for "
                                                             "iterative planners; default nchain 16, overestimation 64)")
    p.add_argument("--trials", type=int, default=None, help="independent searches (default nchain 1000, "
                                                            "overestimation 500)")
    p.add_argument("--members", type=int, default=10, help="overestimation: K, critics in the ensemble")
    p.add_argument("--aggregator", default="min", help="overestimation: the planner's aggregator over the K members, "
                                                       "a name or a YAML mapping: mean, min, '{type: min_of_k, k: 2}', "
                                                       "'{type: mean_minus_std, beta: 1}'")
    p.add_argument("--noise", type=float, default=1.0, help="overestimation: std of each member's error")
    p.add_argument("--truth", choices=["flat", "quadratic"], default="flat",
                   help="overestimation: flat (every plan worth 0; the one-shot case has an exact expectation) or "
                        "quadratic (rewards -||a - 0.3||^2 / A: a regret to pay)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", action="store_true", help="nchain: every A in {2, 4, 10} and n in 1..10 for --planner, "
                                                        "beside the formula at the same evaluations")
    p.add_argument("--json", action="store_true", help="JSON instead of text")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads (default: torch's choice)")
    p.add_argument("--plot", metavar="FILE.png", help="nchain: success vs horizon for A in {2, 4, 10}; "
                                                      "overestimation: the two-panel study (and FILE.json)")
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("bench", help="benchmarks that print figures (ms, GFLOP, GFLOP/s, ceiling)")
    p.add_argument("what", choices=["train", "plan", "loop", "critics", "scaling", "checkpoint", "all"],
                   help="train: one training-phase step; plan: one action; loop: env steps/s of the training "
                        "loop; critics: critic update vs ensemble size; scaling: time vs sizes beside FLOP "
                        "ratios; checkpoint: resumable checkpoint cost with a full replay; all: train, plan, loop and scaling into one JSON (--out)")
    p.add_argument("--members", default="1,2,5,10,20", help="ensemble sizes for `bench critics`")
    p.add_argument("--preset", default="mrq", help="the agent (for `all`: of train and the first loop)")
    p.add_argument("--plan-preset", default="mrsq", help="`all` and `scaling`: the preset planning is measured with")
    p.add_argument("--plan-iters", type=int, default=5, help="actions per timed repeat of `bench plan`")
    p.add_argument("--loop-steps", type=int, default=20, help="env steps per timed window of `bench loop`")
    p.add_argument("--no-scaling", action="store_true", help="`all` without the scaling tables")
    p.add_argument("--transitions", default="100000,1000000", help="`checkpoint`: replay sizes")
    p.add_argument("--new", type=int, default=5000, help="`checkpoint`: transitions added before the incremental one")
    p.add_argument("--dir", help="`checkpoint`: folder on the disk to measure (default: the current one)")
    p.add_argument("--out", help="also write the JSON result to this file")
    p.add_argument("--env", help="environment id (default: dmc:cheetah-run; a pixel preset's own train.env)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_bench)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop_cleanly_on_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM (``kill``, schedulers) both stop a run cleanly: checkpoint
    written, CSVs complete. A process started in the background by a non-interactive shell
    inherits SIGINT *ignored*, and SIGTERM would kill it mid-write, so both are set here, for the
    setup; the Trainer's loop then installs its own (stop at the next step boundary)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        _stop_cleanly_on_signals()
    try:
        return args.func(args)
    except _user_errors() as exc:
        print(f"mrsq: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mrsq: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mrsq compare ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
