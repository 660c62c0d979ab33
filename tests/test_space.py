"""Search spaces: the YAML format, conditions, seeding, and the three compiled forms."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from search import config as vocab
from search.errors import ConfigError, SpaceError
from search.space import builtin_names, load_space, parse_space

BUILTINS = ["batchnorm", "default", "optimizers", "quick", "regression", "regularization", "schedules", "selu"]
SCHEDULE_KNOBS = {
    "schedule_epochs": {"power", "exponential", "piecewise"},
    "schedule_factor": {"piecewise", "plateau"},
    "schedule_patience": {"plateau"},
    "schedule_max_lr": {"one_cycle"},
}


def violations(cfg: dict[str, Any]) -> list[str]:
    """The conditions the issue names, written out here independently of the space compiler."""
    out = []
    if "momentum" in cfg and cfg.get("optimizer", "adam") not in ("momentum", "nesterov"):
        out.append("momentum without a momentum optimizer")
    if "bn_momentum" in cfg and cfg.get("batch_norm", "none") == "none" and not cfg.get("input_batch_norm", False):
        out.append("bn_momentum without batch norm (hidden or on the inputs)")
    if cfg.get("dropout_kind") == "alpha" and cfg.get("activation") != "selu":
        out.append("alpha dropout without selu")
    for knob, schedules in SCHEDULE_KNOBS.items():
        if knob in cfg and cfg.get("lr_schedule", "constant") not in schedules:
            out.append(f"{knob} with {cfg.get('lr_schedule')}")
    return out


def test_builtin_names() -> None:
    assert builtin_names() == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_thousand_samples_never_violate_a_condition(name: str) -> None:
    space = load_space(name)
    configs = space.samples(1000, seed=7)
    for cfg in configs:
        assert violations(cfg) == [], cfg
        space.validate_config(cfg)
        vocab.check_config(cfg)
    # The conditional keys do occur: the conditions select, they do not silently drop keys.
    keys = {k for cfg in configs for k in cfg}
    for key in space.keys:
        assert key in keys, f"{key} never sampled in {name}"


def test_default_covers_every_technique() -> None:
    configs = load_space("default").samples(2000, seed=1)
    seen: dict[str, set[Any]] = {}
    for cfg in configs:
        for k, v in cfg.items():
            seen.setdefault(k, set()).add(v if not isinstance(v, float) or k in ("dropout", "l1", "l2") else "float")
    assert seen["activation"] == set(vocab.ACTIVATIONS) - {"sigmoid"}
    assert seen["optimizer"] == set(vocab.OPTIMIZERS)
    assert seen["lr_schedule"] == set(vocab.SCHEDULES)
    assert seen["batch_norm"] == {"none", "before", "after"}
    assert seen["dropout_kind"] == {"standard", "alpha"}
    assert {(c["l1"] > 0, c["l2"] > 0) for c in configs} == {(False, False), (True, False), (False, True), (True, True)}
    assert {c["max_norm"] for c in configs} == {None, 1.0, 3.0}
    pairs = {(c["activation"], c["initializer"]) for c in configs}
    assert ("selu", "lecun_normal") in pairs and ("tanh", "glorot_uniform") in pairs and ("relu", "he_normal") in pairs
    assert seen["augment_shift"] == {"auto"}  # one-pixel shifts of image inputs, none for flat features


def test_selu_space_is_self_normalizing() -> None:
    for cfg in load_space("selu").samples(300, seed=0):
        assert (cfg["activation"], cfg["initializer"]) == ("selu", "lecun_normal")
        assert cfg["standardize"] is True and cfg["batch_norm"] == "none" and cfg["dropout_kind"] == "alpha"
        assert cfg["l1"] == 0 and cfg["l2"] == 0


def test_same_seed_same_configs_other_seed_others() -> None:
    space = load_space("default")
    assert space.samples(20, seed=3) == space.samples(20, seed=3)
    assert space.samples(20, seed=3) != space.samples(20, seed=4)
    assert space.sample(11) == space.sample(11)


def test_ray_compiled_space_yields_valid_configs() -> None:
    from ray.tune.search.variant_generator import generate_variants

    for name in BUILTINS:
        space = load_space(name)
        param_space = space.to_ray()
        for _ in range(200):
            (_, spec), = generate_variants({"config": param_space})
            cfg = space.assemble(spec["config"])
            space.validate_config(cfg)
            assert violations(cfg) == []


def test_optuna_define_by_run_has_real_conditions() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("default", "quick", "optimizers"):
        space = load_space(name)
        define = space.to_optuna()
        params_seen: list[dict[str, Any]] = []

        def objective(trial: optuna.Trial, space=space, define=define, params_seen=params_seen) -> float:
            define(trial)
            params_seen.append(dict(trial.params))
            cfg = space.assemble(trial.params)
            space.validate_config(cfg)
            assert violations(cfg) == []
            return random.Random(len(params_seen)).random()

        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10))
        study.optimize(objective, n_trials=60)
        # Inactive dimensions are never suggested: momentum only with the momentum optimizers.
        for params in params_seen:
            if "optimizer" in params:
                assert ("momentum" in params) == (params["optimizer"] in ("momentum", "nesterov")) or name == "quick"


def test_keras_tuner_hyperparameters_with_conditional_scopes(tmp_path: Path) -> None:
    import keras_tuner as kt

    space = load_space("default")
    hp = space.to_keras_tuner()
    momentum = hp._hps["momentum"][0]  # the registered HyperParameter and its condition
    assert momentum.conditions and momentum.conditions[0].name == "optimizer"
    assert set(momentum.conditions[0].values) == {"momentum", "nesterov"}
    oracle = kt.oracles.RandomSearchOracle(objective=kt.Objective("score", "max"), max_trials=100, hyperparameters=hp, seed=5)
    oracle._set_project_dir(str(tmp_path), "p")
    rng = random.Random(0)
    for i in range(40):
        trial = oracle.create_trial(f"t{i}")
        values = trial.hyperparameters.values
        cfg = space.assemble(values)
        space.validate_config(cfg)
        assert violations(cfg) == []
        if values["optimizer"] not in ("momentum", "nesterov"):
            assert not trial.hyperparameters.is_active("momentum")
        oracle.update_trial(trial.trial_id, {"score": rng.random()})
        oracle.end_trial(trial)


def test_validate_config_rejects_points_outside_the_space() -> None:
    space = load_space("quick")
    cfg = space.sample(0)
    with pytest.raises(SpaceError, match="n_hidden"):
        space.validate_config({**cfg, "n_hidden": 7})
    with pytest.raises(SpaceError):
        space.validate_config({**cfg, "activation": "tanh", "initializer": "glorot_uniform"})
    selu = next(c for c in space.samples(200, seed=1) if c["activation"] != "selu")
    with pytest.raises(SpaceError, match="alpha"):
        space.validate_config({**selu, "dropout_kind": "alpha"})


# -- the YAML format and its errors ---------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_user_space_file_with_explicit_condition_and_allow(tmp_path: Path) -> None:
    path = write(tmp_path, """
description: mine
params:
  n_hidden: {int: [1, 3]}
  optimizer: {choice: [sgd, adam]}
  learning_rate: {float: [1.0e-3, 1.0e-1], log: true}
  clipnorm: {choice: [0.5, 1.0], when: {optimizer: sgd}}
  activation: {choice: [relu, tanh, elu]}
  width_shape:
    choice: [constant, funnel]
    allow: {funnel: {activation: [relu, elu]}}
""")
    space = load_space(path)
    assert space.name == "space" and space.description == "mine"
    configs = space.samples(500, seed=0)
    for cfg in configs:
        assert ("clipnorm" in cfg) == (cfg["optimizer"] == "sgd")
        assert not (cfg["width_shape"] == "funnel" and cfg["activation"] == "tanh")
        assert 1e-3 <= cfg["learning_rate"] <= 1e-1
    assert {c["width_shape"] for c in configs if c["activation"] == "relu"} == {"constant", "funnel"}


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("params: {n_hidden: {int: [1, 3]}\n", r"line \d+: malformed YAML"),
        ("params:\n  n_hiden: 2\n", r"unknown key 'n_hiden'"),
        ("params:\n  learning_rate: {float: [0.1, 0.01]}\n", r"learning_rate: low <= high must hold, but got low=0.1, high=0.01"),
        ("params:\n  activation: {choice: [relu, swishy]}\n", r"'swishy' is not a valid activation"),
        ("params:\n  optimizer: {choice: [adam, adamm]}\n", r"'adamm' is not a valid optimizer"),
        ("params:\n  optimizer: adam\n  momentum: {float: [0.8, 0.9]}\n", r"momentum: the condition optimizer in \{momentum, nesterov\} can never hold"),
        ("params:\n  batch_norm: none\n  bn_momentum: 0.9\n", r"bn_momentum: the condition batch_norm .* can never hold"),
        ("params:\n  n_hidden: {int: [1, 3]}\n  dropout: {float: [0, 0.3], when: {n_hidden: 2}}\n", r"dropout: conditions can only test choice or fixed keys"),
        ("params:\n  activation: relu\n  dropout_kind: alpha\n", r"dropout_kind: no option of dropout_kind is allowed when activation is relu"),
        ("params:\n  n_hidden: {range: [1, 2]}\n", r"n_hidden: give exactly one of fixed, choice, int or float"),
        ("params:\n  n_hidden: {float: [1, 2]}\n", r"n_hidden is a int; use int"),
        ("params:\n  learning_rate: {float: [0, 0.1], log: true}\n", r"a log range needs low > 0"),
        ("params:\n  dropout: {float: [0, 1.5]}\n", r"bound 1.5 is outside the domain of dropout"),
        ("params:\n  activation+initializer: {choice: [[relu]]}\n", r"each option must list 2 values"),
        ("- just a list\n", r"a space file is a mapping"),
        ("params: {}\n", r"params: must be a non-empty mapping"),
        ("params:\n  n_hidden: {int: [1, 3]}\n  n_hidden: 2\n", r"line 3: 'n_hidden' is given twice \(first on line 2\)"),
        ("params:\n  lr: 1\nparams:\n  n_hidden: 2\n", r"line 3: 'params' is given twice"),
    ],
)
def test_bad_space_files_name_file_and_key(tmp_path: Path, text: str, pattern: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpaceError, match=pattern) as info:
        load_space(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_unknown_builtin_and_missing_file() -> None:
    with pytest.raises(SpaceError, match=r"unknown space 'nope'; built-in spaces: batchnorm, default"):
        load_space("nope")
    with pytest.raises(SpaceError, match="no such space file"):
        load_space("/does/not/exist.yaml")


def test_parse_value_for_set_option() -> None:
    assert vocab.parse_value("n_hidden", "3") == 3
    assert vocab.parse_value("learning_rate", "1e-3") == 1e-3
    assert vocab.parse_value("max_norm", "null") is None
    assert vocab.parse_value("standardize", "true") is True
    assert vocab.parse_value("activation", "selu") == "selu"
    for key, text in [("n_hidden", "two"), ("n_hidden", "0"), ("activation", "swishy"), ("dropout", "1.5"), ("nope", "1")]:
        with pytest.raises(ConfigError):
            vocab.parse_value(key, text)


def test_resolve_fills_defaults_and_drops_what_does_not_apply() -> None:
    full = vocab.resolve({"optimizer": "adam", "lr_schedule": "plateau"})
    assert "momentum" not in full and "schedule_max_lr" not in full
    assert full["schedule_patience"] == vocab.DEFAULTS["schedule_patience"]
    assert full["beta_1"] == 0.9
    with pytest.raises(ConfigError, match="momentum"):
        vocab.resolve({"optimizer": "adam", "momentum": 0.9})
    with pytest.raises(ConfigError, match="alpha"):
        vocab.resolve({"activation": "relu", "dropout_kind": "alpha"})


def test_bn_momentum_applies_with_input_batch_norm_alone() -> None:
    """Every BN layer reads bn_momentum, the input BN too: with only input BN it is sampled."""
    space = parse_space(
        "params:\n  batch_norm: {choice: [none, after]}\n  input_batch_norm: {choice: [false, true]}\n"
        "  bn_momentum: {float: [0.9, 0.95]}\n"
    )
    configs = space.samples(400, seed=3)
    combos = {(c["batch_norm"], c["input_batch_norm"], "bn_momentum" in c) for c in configs}
    assert combos == {("none", False, False), ("none", True, True), ("after", False, True), ("after", True, True)}
    assert "or input_batch_norm in {true}" in space.dimension("bn_momentum").describe()
    only_input = parse_space("params:\n  batch_norm: none\n  input_batch_norm: true\n  bn_momentum: 0.9\n")
    assert only_input.sample(0)["bn_momentum"] == 0.9
    with pytest.raises(SpaceError, match=r"bn_momentum: the condition batch_norm in \{after, before\} or "
                                         r"input_batch_norm in \{true\} can never hold"):
        parse_space("params:\n  batch_norm: none\n  input_batch_norm: false\n  bn_momentum: 0.9\n")


def test_image_shifts_are_refused_for_flat_features_only() -> None:
    shifted = parse_space("params:\n  augment_shift: {choice: [auto, 0.0, 0.125]}\n", name="shifts")
    assert shifted.max_value("augment_shift") == 0.125  # auto counts only when it is the only value
    shifted.check_inputs((8, 8), "digits")
    shifted.check_inputs((28, 28, 1), "mnist")
    with pytest.raises(SpaceError, match=r"^space shifts sets augment_shift up to 0.125, but the inputs of data.csv are "
                                         r"flat features \(shape \(10,\)\), not images"):
        shifted.check_inputs((10,), "data.csv")
    default = load_space("default")
    assert default.max_value("augment_shift") == "auto"
    default.check_inputs((10,), "data.csv")  # auto: no shifts for flat features, nothing to refuse
    load_space("quick").check_inputs((10,), "data.csv")  # the key's default is 0
