"""Tests for mrsq.specs: presets, round trips, ``extends``, ``--set`` overrides and error messages."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "disable")

import pytest
import yaml

import mrsq.components  # noqa: F401  (registers the built-in components)
from mrsq import registry, specs
from mrsq.critics.aggregators import MinOfKSpec
from mrsq.critics.ensemble import EnsembleCriticSpec
from mrsq.specs import SpecError

specs.register_builtin_presets()
PRESETS = registry.PRESETS.names()
EXTENDING = [n for n in PRESETS if "extends" in specs.read_yaml(registry.PRESETS.get(n))]


def flatten(d: dict, prefix: str = "") -> dict:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}`` (lists and scalars are leaves)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_error(source, *overrides) -> str:
    with pytest.raises(SpecError) as info:
        specs.load(source, list(overrides))
    return str(info.value)


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------- presets
def test_builtin_presets_are_registered():
    assert {"mrq", "mrq_small"} <= set(PRESETS)
    assert EXTENDING, "no preset uses extends"


@pytest.mark.parametrize("name", PRESETS)
def test_preset_round_trip_is_exact(name, tmp_path):
    spec = specs.load(name)
    text = specs.to_yaml(spec)
    again = specs.from_yaml(text, where=name)
    assert again == spec
    assert specs.to_yaml(again) == text
    assert specs.to_dict(again) == specs.to_dict(spec)
    # the dumped YAML is itself a valid source (this is what a run's spec.yaml is)
    path = write(tmp_path, "spec.yaml", text)
    assert specs.load(path) == spec
    assert specs.to_yaml(specs.load(str(path))) == text


@pytest.mark.parametrize("name", PRESETS)
def test_preset_has_one_line_description(name):
    help_text = registry.PRESETS.help(name)
    assert help_text and "\n" not in help_text
    assert specs.load(name).description == help_text


def diff_paths(child: dict, base: dict, prefix: str = "") -> set[str]:
    """Dotted paths where two resolved spec dicts differ; a component whose ``type`` changed is one
    path (its mapping replaced the base's, so its fields do not carry over)."""
    out = set()
    for key in child.keys() | base.keys():
        c, b = child.get(key), base.get(key)
        if isinstance(c, dict) and isinstance(b, dict) and c.get("type") == b.get("type"):
            out |= diff_paths(c, b, f"{prefix}{key}.")
        elif c != b:
            out.add(f"{prefix}{key}")
    return out


def lookup(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


@pytest.mark.parametrize("name", EXTENDING)
def test_extending_preset_changes_only_stated_fields(name):
    raw = specs.read_yaml(registry.PRESETS.get(name))
    parent = raw.pop("extends")
    child, base = specs.to_dict(specs.load(name)), specs.to_dict(specs.load(parent))
    stated = flatten(raw)
    diff = diff_paths(child, base)
    assert diff, f"{name} is identical to {parent}"
    unstated = {d for d in diff if not any(s == d or s.startswith(d + ".") or d.startswith(s + ".")
                                           for s in stated)}
    assert not unstated, f"{name} differs from {parent} in fields its file does not list: {sorted(unstated)}"
    for key, value in stated.items():
        resolved = lookup(child, key)
        assert resolved == value or resolved == {"type": value}, key


def test_mrq_small_states_only_differences():
    raw = specs.read_yaml(registry.PRESETS.get("mrq_small"))
    assert raw.pop("extends") == "mrq"
    diff = diff_paths(specs.to_dict(specs.load("mrq_small")), specs.to_dict(specs.load("mrq")))
    # exactly the fields the file lists differ: none restated, none changed behind its back
    assert diff == set(flatten(raw))
    assert diff == {"description", "encoder.zs_dim", "encoder.za_dim", "encoder.zsa_dim",
                    "encoder.hidden_dim", "critic.hidden_dim", "policy.hidden_dim", "batch_size",
                    "warmup_steps"}


def test_mrq_small_differs_from_mrq_in_its_listed_fields():
    small, mrq = specs.load("mrq_small"), specs.load("mrq")
    assert (small.batch_size, small.warmup_steps) == (128, 2000)
    assert (mrq.batch_size, mrq.warmup_steps) == (256, 10_000)
    assert small.encoder.zs_dim == small.critic.hidden_dim == small.policy.hidden_dim == 128
    assert small.critic.num_members == mrq.critic.num_members == 2  # inherited, not restated
    assert small.train == mrq.train and small.aggregators == mrq.aggregators


# ---------------------------------------------------------------------------------- --set
def test_set_num_members():
    spec = specs.load("mrq", ["critic.num_members=5"])
    assert spec.critic.num_members == 5
    assert spec.critic.hidden_dim == specs.load("mrq").critic.hidden_dim
    assert "num_members: 5" in specs.to_yaml(spec)


def test_set_num_members_zero_is_rejected():
    msg = load_error("mrq", "critic.num_members=0")
    assert msg.startswith("mrq: critic.num_members: ")
    assert "greater than or equal to 1" in msg and "(got 0)" in msg


def test_set_misspelled_field():
    msg = load_error("mrq", "critic.num_memberz=5")
    allowed = ", ".join(sorted(EnsembleCriticSpec.model_fields))
    assert "critic.num_memberz" in msg
    assert "unknown field" in msg
    assert "did you mean 'num_members'" in msg
    assert f"(allowed: {allowed})" in msg
    assert "num_hidden" in allowed and "in_keys" in allowed


def test_set_unknown_critic_type():
    msg = load_error("mrq", "critic.type=nope")
    assert "critic: unknown critic 'nope'" in msg
    assert f"(known: {', '.join(registry.CRITICS.names())})" in msg
    assert "ensemble" in msg


def test_set_misspelled_aggregator():
    msg = load_error("mrq", "aggregators.target=mni")
    assert "aggregators.target" in msg
    assert "unknown aggregator 'mni'; did you mean 'min'?" in msg
    assert "min_of_k" in msg  # the known list


def test_set_unknown_agent_type():
    msg = load_error("mrq", "type=mrqq")
    assert "type: unknown agent 'mrqq'; did you mean 'mrq'?" in msg


def test_set_non_integer_steps():
    msg = load_error("mrq_small", "train.steps=abc")
    assert msg.startswith("mrq_small: train.steps: ")
    assert "integer" in msg and "'abc'" in msg


def test_set_values_are_parsed_as_yaml():
    spec = specs.load("mrq", ["critic.num_members=5", "train.steps=1000", "optim.fused=false", "train.threads=null",
                              "train.env=dmc:cheetah-run", "optim.critic_lr=1e-3",
                              "aggregators.target={type: min_of_k, k: 3}"])
    assert spec.train.steps == 1000 and spec.optim.fused is False and spec.train.threads is None
    assert spec.train.env == "dmc:cheetah-run" and spec.optim.critic_lr == pytest.approx(1e-3)
    assert isinstance(spec.aggregators.target, MinOfKSpec) and spec.aggregators.target.k == 3


def test_set_field_of_shorthand_component():
    spec = specs.load("mrq", ["critic.num_members=5", "aggregators.target=min_of_k", "aggregators.target.k=4"])
    assert spec.aggregators.target == MinOfKSpec(k=4)
    msg = load_error("mrq", "aggregators.target.k=4")  # min has no k
    assert "aggregators.target.k: unknown field (allowed: type)" in msg


@pytest.mark.parametrize("item, expected", [("critic.num_members", "expected key=value"),
                                            ("critic..x=1", "bad key"),
                                            ("=3", "bad key")])
def test_set_malformed(item, expected):
    assert expected in load_error("mrq", item)


# ---------------------------------------------------------------------------------- sources
def test_unknown_preset_suggests():
    msg = load_error("mrq_smal")
    assert "unknown preset 'mrq_smal'; did you mean 'mrq_small'?" in msg
    assert "(known: " in msg and "mrq" in msg
    assert ".yaml" in msg  # says a path works too


def test_missing_yaml_file(tmp_path):
    path = tmp_path / "nope.yaml"
    msg = load_error(str(path))
    assert str(path) in msg and "cannot read" in msg


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "broken.yaml", "type: mrq\ncritic:\n  num_members: 3\n   bad: [\n")
    msg = load_error(str(path))
    assert msg.startswith(f"{path}:")
    assert "line 4" in msg and "invalid YAML" in msg


def test_yaml_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "list.yaml", "- mrq\n- mrq_small\n")
    assert "must hold a mapping, got list" in load_error(str(path))


def test_yaml_misspelled_top_level_field(tmp_path):
    path = write(tmp_path, "typo.yaml", "extends: mrq\ndiscont: 0.9\n")
    msg = load_error(str(path))
    assert msg.startswith(f"{path}: discont: unknown field; did you mean 'discount'?")
    assert "(allowed: aggregators, batch_size, compile, critic," in msg


def test_yaml_extends_with_override(tmp_path):
    path = write(tmp_path, "mine.yaml",
                 "extends: mrq\ncritic: {num_members: 7}\naggregators:\n  target: {type: min_of_k, k: 2}\n")
    spec = specs.load(str(path))
    expected = specs.load("mrq", ["critic.num_members=7", "aggregators.target={type: min_of_k, k: 2}"])
    # the same agent; only the --set route marks the preset's description as overridden
    assert spec.model_dump(exclude={"description"}) == expected.model_dump(exclude={"description"})
    assert expected.description.endswith("[overridden: critic.num_members=7, aggregators.target={type: min_of_k, k: 2}]")
    assert spec.critic.hidden_dim == 512  # the rest of mrq's critic is kept
    # --set on top of the file
    assert specs.load(str(path), ["critic.num_members=3"]).critic.num_members == 3


def test_yaml_extends_with_bad_override(tmp_path):
    path = write(tmp_path, "mine.yaml", "extends: mrq\ncritic: {num_memberz: 7}\n")
    msg = load_error(str(path))
    assert msg.startswith(f"{path}: critic.num_memberz: unknown field; did you mean 'num_members'?")


def test_yaml_extends_unknown_preset(tmp_path):
    path = write(tmp_path, "mine.yaml", "extends: mrq_smll\n")
    assert "unknown preset 'mrq_smll'; did you mean 'mrq_small'?" in load_error(str(path))


def test_yaml_extends_changing_type_replaces_mapping(tmp_path):
    base = write(tmp_path, "base.yaml", "extends: mrq\ncritic: {num_members: 5}\naggregators:\n  target: {type: min_of_k, k: 3}\n")
    child = write(tmp_path, "child.yaml", f"extends: {base}\naggregators:\n  target: {{type: mean_minus_std}}\n")
    target = specs.load(str(child)).aggregators.target
    assert target.type == "mean_minus_std" and target.beta == 1.0  # k did not carry over


def test_yaml_extends_relative_to_its_file(tmp_path, monkeypatch):
    write(tmp_path, "base.yaml", "extends: mrq_small\nbatch_size: 64\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nwarmup_steps: 5\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = specs.load(str(child))
    assert (spec.batch_size, spec.warmup_steps, spec.critic.hidden_dim) == (64, 5, 128)


def test_yaml_extends_cycle(tmp_path):
    a = tmp_path / "a.yaml"
    write(tmp_path, "b.yaml", f"extends: {a}\n")
    write(tmp_path, "a.yaml", f"extends: {tmp_path / 'b.yaml'}\n")
    assert "preset cycle" in load_error(str(a))


# ---------------------------------------------------------------------------------- nesting
def test_nested_component_round_trip():
    text = ("type: mrq\naggregators:\n  target: {type: min_of_k, k: 2}\n  policy: mean\n"
            "critic: {type: ensemble, num_members: 4}\n")
    spec = specs.from_yaml(text)
    assert isinstance(spec.aggregators.target, MinOfKSpec) and spec.aggregators.target.k == 2
    assert spec.aggregators.policy.type == "mean"  # shorthand
    dumped = specs.to_yaml(spec)
    data = yaml.safe_load(dumped)
    assert data["aggregators"]["target"] == {"type": "min_of_k", "k": 2}
    assert data["aggregators"]["policy"] == {"type": "mean"}
    assert data["critic"]["num_members"] == 4
    again = specs.from_yaml(dumped)
    assert again == spec and isinstance(again.aggregators.target, MinOfKSpec)
    assert specs.to_yaml(again) == dumped


def test_from_yaml_errors():
    with pytest.raises(SpecError, match="ckpt: invalid YAML"):
        specs.from_yaml("type: [", where="ckpt")
    with pytest.raises(SpecError, match="ckpt: a spec must be a mapping"):
        specs.from_yaml("- 1", where="ckpt")
    with pytest.raises(SpecError, match="ckpt: missing 'type'"):
        specs.from_yaml("discount: 0.9", where="ckpt")


def test_min_of_k_larger_than_the_ensemble_is_rejected_at_validation():
    with pytest.raises(SpecError, match=r"aggregators.planner.k \(6\) exceeds critic.num_members \(5\)"):
        specs.load("mrsq", ["critic.num_members=5", "aggregators.planner=min_of_k", "aggregators.planner.k=6"])
    assert specs.load("mrsq", ["critic.num_members=5", "aggregators.target={type: min_of_k, k: 5}"])


def test_set_with_another_component_type_replaces_the_mapping():
    # the planner aggregator of mrsq_tqc_small is {type: truncated_mean, drop: 2}: a subset in its
    # place keeps no `drop`; a mapping of the same type still merges field by field
    spec = specs.load("mrsq_tqc_small", ["aggregators.planner={type: subset, k: 2}"])
    assert spec.aggregators.planner.type == "subset" and spec.aggregators.planner.k == 2
    spec = specs.load("mrsq_tqc_small", ["critic={num_quantiles: 7}"])
    assert spec.critic.type == "quantile_ensemble" and spec.critic.num_quantiles == 7
    assert spec.critic.hidden_dim == 128  # the preset's other critic fields are kept


def test_partial_nested_mappings_get_the_same_typo_help_as_full_ones(tmp_path):
    """`critic: {num_member: 5}` under `extends:` or `type:` names the default component's fields."""
    for head in ("extends: td3", "type: td3"):
        path = tmp_path / "v.yaml"
        path.write_text(f"{head}\ncritic: {{num_member: 5}}\n")
        with pytest.raises(specs.SpecError, match=r"critic\.num_member: unknown field; did you mean 'num_members'\? "
                                                  r"\(allowed: .*num_members"):
            specs.load(str(path))


def test_a_variant_without_a_description_derives_one_from_its_parent(tmp_path):
    path = tmp_path / "fewer.yaml"
    path.write_text("extends: mrsq_small\ncritic: {num_members: 3}\naggregators: {planner: {type: mean}}\n"
                    "train: {steps: 10}\n")
    parent = specs.load("mrsq_small").description
    assert specs.load(str(path)).description == f"{parent} [variant fewer: critic.num_members, aggregators.planner]"
    path.write_text("extends: mrsq_small\ndescription: mine\ncritic: {num_members: 3}\n")
    assert specs.load(str(path)).description == "mine"


def test_run_length_follows_the_env_protocol_unless_set():
    # MR.Q's protocol: 1M agent steps on Gym MuJoCo, 500k on DMC (1M frames at action repeat 2)
    assert specs.load("mrq").train.steps == 500_000
    assert specs.load("mrq", ["train.env=dmc:cheetah-run"]).train.steps == 500_000
    assert specs.load("mrsq", ["train.env=gym:Hopper-v5"]).train.steps == 1_000_000
    assert specs.load("td3", ["train={env: gym:Hopper-v5, seed: 3}"]).train.steps == 1_000_000
    assert specs.load("mrq", ["train.env=gym:Hopper-v5", "train.steps=300"]).train.steps == 300
    # the resolved value is what spec.yaml holds, so a saved spec reloads to the same length
    saved = specs.from_yaml(specs.to_yaml(specs.load("mrq", ["train.env=gym:Hopper-v5"])))
    assert saved.train.steps == 1_000_000 and saved.train.env == "gym:Hopper-v5"
    # assigning the env moves a length never given, not one that was
    spec = specs.load("mrq")
    spec.train.env = "gym:Hopper-v5"
    assert spec.train.steps == 1_000_000
    spec.train.env = "dmc:cheetah-run"
    assert spec.train.steps == 500_000
    fixed = specs.load("mrq", ["train.steps=300"])
    fixed.train.env = "gym:Hopper-v5"
    assert fixed.train.steps == 300
    # partial sections still keep everything else of the default (only what the factory set merges)
    assert specs.load("mrq", ["train.env=gym:Hopper-v5"]).train.eval_every == 5_000
