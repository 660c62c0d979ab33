"""Tests for search.model: each technique checked on the built model, against expectations
written out here (closed forms, Keras classes, numbers), not against the code under test."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import keras
import numpy as np
import pytest

from search import model as M
from search.errors import ConfigError

L = keras.layers


def build(n_classes: int = 3, input_shape=(4,), steps_per_epoch: int = 1, seed: int | None = 0, **cfg):
    cfg.setdefault("n_hidden", 2)
    cfg.setdefault("n_neurons", 8)
    return M.build_model(cfg, input_shape, n_classes, steps_per_epoch=steps_per_epoch, seed=seed)


def classes(model) -> list[type]:
    return [type(layer) for layer in model.layers]


def hidden_dense(model) -> list[keras.layers.Dense]:
    return [layer for layer in model.layers if isinstance(layer, L.Dense) and layer.name != "output"]


def lr_at(optimizer, step: int) -> float:
    """The optimizer's current learning rate after ``step`` steps, as train code reads it."""
    optimizer.iterations.assign(step)
    return float(optimizer.learning_rate)


# --------------------------------------------------------------------------- module hygiene


def test_module_imports_neither_ray_nor_mlflow():
    tree = ast.parse(Path(M.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "keras" in imported
    assert not imported & {"ray", "mlflow"}


def test_invalid_config_is_a_config_error():
    with pytest.raises(ConfigError):
        build(optimizer="adam", momentum=0.9)  # momentum does not apply to adam
    with pytest.raises(ConfigError):
        build(activation="relu", dropout=0.2, dropout_kind="alpha")
    with pytest.raises(ConfigError):
        build(no_such_key=1)


def test_seed_makes_weights_reproducible():
    a = build(seed=7).get_weights()
    b = build(seed=7).get_weights()
    c = build(seed=8).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


# --------------------------------------------------------------------------- layers


def test_layer_order_without_batch_norm():
    model = build(batch_norm="none", input_shape=(2, 3))
    assert classes(model) == [L.Flatten, L.Dense, L.Dense, L.Dense]
    assert model.input_shape == (None, 2, 3)
    assert all(d.activation is keras.activations.relu and d.use_bias for d in hidden_dense(model))


def test_layer_order_batch_norm_before_activation():
    model = build(batch_norm="before", activation="elu")
    assert classes(model) == [
        L.Flatten,
        L.Dense, L.BatchNormalization, L.Activation,
        L.Dense, L.BatchNormalization, L.Activation,
        L.Dense,
    ]  # fmt: skip
    for dense in hidden_dense(model):
        assert dense.use_bias is False
        assert dense.activation is keras.activations.linear
    assert [layer.activation for layer in model.layers if isinstance(layer, L.Activation)] == [
        keras.activations.elu
    ] * 2
    assert model.get_layer("output").use_bias is True


def test_layer_order_batch_norm_after_activation():
    model = build(batch_norm="after", activation="tanh")
    assert classes(model) == [L.Flatten, L.Dense, L.BatchNormalization, L.Dense, L.BatchNormalization, L.Dense]
    for dense in hidden_dense(model):
        assert dense.use_bias is True
        assert dense.activation is keras.activations.tanh


def test_input_batch_norm_and_momentum():
    model = build(input_batch_norm=True, batch_norm="after", bn_momentum=0.9)
    assert classes(model)[:3] == [L.Flatten, L.BatchNormalization, L.Dense]
    bns = [layer for layer in model.layers if isinstance(layer, L.BatchNormalization)]
    assert len(bns) == 3
    assert all(bn.momentum == pytest.approx(0.9) for bn in bns)
    # without hidden BN, bn_momentum still applies: the input BN reads it (default 0.99)
    plain = build(input_batch_norm=True)
    assert [type(x) for x in plain.layers].count(L.BatchNormalization) == 1
    assert plain.layers[1].momentum == pytest.approx(0.99)
    only_input = build(input_batch_norm=True, bn_momentum=0.8)
    assert only_input.layers[1].momentum == pytest.approx(0.8)
    with pytest.raises(ConfigError, match="bn_momentum only applies when batch_norm is one of before, after or "
                                          "input_batch_norm is one of True"):
        build(bn_momentum=0.8)
    assert L.BatchNormalization not in classes(build())


@pytest.mark.parametrize(
    "name, cls",
    [
        ("lecun_normal", keras.initializers.LecunNormal),
        ("he_normal", keras.initializers.HeNormal),
        ("he_uniform", keras.initializers.HeUniform),
        ("glorot_uniform", keras.initializers.GlorotUniform),
        ("orthogonal", keras.initializers.Orthogonal),
    ],
)
def test_kernel_initializer(name, cls):
    model = build(initializer=name)
    assert all(type(d.kernel_initializer) is cls for d in hidden_dense(model))
    assert type(model.get_layer("output").kernel_initializer) is keras.initializers.GlorotUniform


def _gelu(x: float) -> float:
    return 0.5 * x * (1 + math.erf(x / math.sqrt(2)))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805

# f(-1), f(0.5) in closed form
ACTIVATION_VALUES = {
    "relu": (0.0, 0.5),
    "elu": (math.exp(-1) - 1, 0.5),
    "selu": (_SELU_SCALE * _SELU_ALPHA * (math.exp(-1) - 1), _SELU_SCALE * 0.5),
    "leaky_relu": (-0.2, 0.5),  # Keras' default negative slope, Géron's alpha=0.2
    "gelu": (_gelu(-1), _gelu(0.5)),
    "swish": (-1 * _sigmoid(-1), 0.5 * _sigmoid(0.5)),
    "tanh": (math.tanh(-1), math.tanh(0.5)),
    "sigmoid": (_sigmoid(-1), _sigmoid(0.5)),
}


@pytest.mark.parametrize("batch_norm", ["none", "before"])
@pytest.mark.parametrize("name", sorted(ACTIVATION_VALUES))
def test_activation_function(name, batch_norm):
    cfg = {"activation": name, "batch_norm": batch_norm}
    if name == "selu":
        cfg["initializer"] = "lecun_normal"
    model = build(n_hidden=1, **cfg)
    if batch_norm == "none":
        fn = model.get_layer("dense_1").activation
    else:
        fn = model.get_layer("act_1").activation
    got = keras.ops.convert_to_numpy(fn(keras.ops.convert_to_tensor([-1.0, 0.5])))
    np.testing.assert_allclose(got, ACTIVATION_VALUES[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "batch_norm, expected",
    [
        ("none", [L.Flatten, L.Dense, L.PReLU, L.Dense]),
        ("before", [L.Flatten, L.Dense, L.BatchNormalization, L.PReLU, L.Dense]),
        ("after", [L.Flatten, L.Dense, L.PReLU, L.BatchNormalization, L.Dense]),
    ],
)
def test_prelu_is_a_layer(batch_norm, expected):
    model = build(n_hidden=1, activation="prelu", batch_norm=batch_norm)
    assert classes(model) == expected
    assert model.get_layer("dense_1").activation is keras.activations.linear
    assert model.get_layer("prelu_1").trainable_weights  # a learned slope


def test_standard_dropout_after_each_hidden_layer():
    model = build(n_hidden=3, dropout=0.3)
    assert classes(model) == [L.Flatten] + [L.Dense, L.Dropout] * 3 + [L.Dense]
    assert all(layer.rate == pytest.approx(0.3) for layer in model.layers if isinstance(layer, L.Dropout))
    assert M.has_dropout(model)


def test_alpha_dropout_for_selu():
    model = build(n_hidden=2, activation="selu", initializer="lecun_normal", dropout=0.1, dropout_kind="alpha")
    assert classes(model) == [L.Flatten, L.Dense, L.AlphaDropout, L.Dense, L.AlphaDropout, L.Dense]
    assert all(layer.rate == pytest.approx(0.1) for layer in model.layers if isinstance(layer, L.AlphaDropout))
    assert M.has_dropout(model)


def test_no_dropout_layers_at_rate_zero():
    model = build(n_hidden=3, dropout=0.0)
    assert not any(isinstance(layer, (L.Dropout, L.AlphaDropout)) for layer in model.layers)
    assert not M.has_dropout(model)


def test_dropout_with_batch_norm_comes_last_in_the_block():
    model = build(n_hidden=1, batch_norm="after", dropout=0.2)
    assert classes(model) == [L.Flatten, L.Dense, L.BatchNormalization, L.Dropout, L.Dense]


@pytest.mark.parametrize(
    "n_hidden, n_neurons, shape, n_classes, widths",
    [
        (3, 300, "constant", 10, [300, 300, 300]),
        (3, 300, "funnel", 10, [300, 150, 75]),
        (2, 300, "funnel", 10, [300, 150]),
        (4, 32, "funnel", 10, [32, 16, 10, 10]),  # never narrower than the number of classes
        (2, 5, "funnel", 10, [5, 5]),  # ... nor wider than n_neurons
    ],
)
def test_widths(n_hidden, n_neurons, shape, n_classes, widths):
    model = build(n_hidden=n_hidden, n_neurons=n_neurons, width_shape=shape, n_classes=n_classes, input_shape=(3,))
    assert [d.units for d in hidden_dense(model)] == widths


def test_kernel_regularizers():
    def regs(model):
        return [d.kernel_regularizer for d in model.layers if isinstance(d, L.Dense)]

    assert regs(build()) == [None, None, None]

    l1 = regs(build(l1=0.01))
    assert all(type(r) is keras.regularizers.L1 for r in l1)
    assert float(l1[0].l1) == pytest.approx(0.01)

    l2 = regs(build(l2=0.002))
    assert all(type(r) is keras.regularizers.L2 for r in l2)
    assert float(l2[0].l2) == pytest.approx(0.002)

    both = regs(build(l1=0.01, l2=0.002))
    assert all(type(r) is keras.regularizers.L1L2 for r in both)
    assert float(both[0].l1) == pytest.approx(0.01)
    assert float(both[0].l2) == pytest.approx(0.002)


def test_regularization_shows_up_in_the_loss():
    model = build(l2=0.5, n_hidden=1)
    kernels = [d.kernel for d in model.layers if isinstance(d, L.Dense)]
    expected = sum(0.5 * float(np.sum(keras.ops.convert_to_numpy(k) ** 2)) for k in kernels)
    model(np.zeros((1, 4), "float32"))
    assert sum(float(x) for x in model.losses) == pytest.approx(expected, rel=1e-4)


def test_max_norm_constraint_on_hidden_layers():
    model = build(max_norm=2.0)
    for dense in hidden_dense(model):
        assert type(dense.kernel_constraint) is keras.constraints.MaxNorm
        assert dense.kernel_constraint.max_value == pytest.approx(2.0)
    assert model.get_layer("output").kernel_constraint is None
    assert all(d.kernel_constraint is None for d in hidden_dense(build()))


def test_output_for_many_classes():
    model = build(n_classes=10)
    out = model.get_layer("output")
    assert out.units == 10
    assert out.activation is keras.activations.softmax
    assert model.loss == "sparse_categorical_crossentropy"
    probs = keras.ops.convert_to_numpy(model(np.random.default_rng(0).normal(size=(3, 4)).astype("float32")))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_output_for_two_classes():
    model = build(n_classes=2)
    out = model.get_layer("output")
    assert out.units == 1
    assert out.activation is keras.activations.sigmoid
    assert model.loss == "binary_crossentropy"


# --------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize(
    "cfg, cls, settings",
    [
        ({"optimizer": "sgd"}, keras.optimizers.SGD, {"momentum": 0.0, "nesterov": False}),
        ({"optimizer": "momentum", "momentum": 0.8}, keras.optimizers.SGD, {"momentum": 0.8, "nesterov": False}),
        ({"optimizer": "nesterov", "momentum": 0.95}, keras.optimizers.SGD, {"momentum": 0.95, "nesterov": True}),
        ({"optimizer": "adagrad"}, keras.optimizers.Adagrad, {}),
        ({"optimizer": "rmsprop", "rho": 0.8}, keras.optimizers.RMSprop, {"rho": 0.8}),
        ({"optimizer": "adam", "beta_1": 0.8, "beta_2": 0.99}, keras.optimizers.Adam, {"beta_1": 0.8, "beta_2": 0.99}),
        ({"optimizer": "adamax", "beta_1": 0.85}, keras.optimizers.Adamax, {"beta_1": 0.85, "beta_2": 0.999}),
        ({"optimizer": "nadam", "beta_2": 0.98}, keras.optimizers.Nadam, {"beta_1": 0.9, "beta_2": 0.98}),
        (
            {"optimizer": "adamw", "beta_1": 0.8, "beta_2": 0.99, "weight_decay": 0.01},
            keras.optimizers.AdamW,
            {"beta_1": 0.8, "beta_2": 0.99, "weight_decay": 0.01},
        ),
    ],
)
def test_optimizer(cfg, cls, settings):
    opt = M.build_optimizer({**cfg, "learning_rate": 0.05})
    assert type(opt) is cls
    assert float(opt.learning_rate) == pytest.approx(0.05)
    for key, value in settings.items():
        assert getattr(opt, key) == pytest.approx(value), key
    assert opt.clipnorm is None and opt.clipvalue is None
    # the compiled model carries it
    assert type(build(**cfg).optimizer) is cls


def test_gradient_clipping():
    assert M.build_optimizer({"clipnorm": 1.5}).clipnorm == pytest.approx(1.5)
    assert M.build_optimizer({"optimizer": "sgd", "clipvalue": 0.5}).clipvalue == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="clipnorm"):
        M.build_optimizer({"clipnorm": 1.0, "clipvalue": 0.5})


# --------------------------------------------------------------------------- schedules

LR0 = 0.1


def test_constant_schedule():
    assert M.build_schedule({"learning_rate": LR0}) == LR0
    opt = M.build_optimizer({"learning_rate": LR0})
    assert lr_at(opt, 0) == pytest.approx(LR0)
    assert lr_at(opt, 1000) == pytest.approx(LR0)
    assert M.schedule_callbacks({"lr_schedule": "constant"}) == []


def test_power_schedule():
    opt = M.build_optimizer({"lr_schedule": "power", "learning_rate": LR0, "schedule_epochs": 2.0}, steps_per_epoch=5)
    s = 10
    for t in (0, 1, 10, 25, 30, 1000):
        assert lr_at(opt, t) == pytest.approx(LR0 / (1 + t / s), rel=1e-5), t


def test_exponential_schedule():
    opt = M.build_optimizer(
        {"lr_schedule": "exponential", "learning_rate": LR0, "schedule_epochs": 2.0}, steps_per_epoch=5
    )
    s = 10
    for t in (0, 5, 10, 20, 37):
        assert lr_at(opt, t) == pytest.approx(LR0 * 0.1 ** (t / s), rel=1e-5), t


def test_piecewise_schedule_drops_every_schedule_epochs():
    cfg = {"lr_schedule": "piecewise", "learning_rate": LR0, "schedule_epochs": 2.0, "schedule_factor": 0.5, "epochs": 7}
    opt = M.build_optimizer(cfg, steps_per_epoch=5)
    s = 10  # drops at epochs 2, 4 and 6 of a 7-epoch run: steps 10, 20, 30
    assert lr_at(opt, 9) == pytest.approx(LR0)
    assert lr_at(opt, 10) == pytest.approx(LR0 * 0.5)
    assert lr_at(opt, 19) == pytest.approx(LR0 * 0.5)
    assert lr_at(opt, 20) == pytest.approx(LR0 * 0.25)
    assert lr_at(opt, 30) == pytest.approx(LR0 * 0.125)
    for t in range(35):
        assert lr_at(opt, t) == pytest.approx(LR0 * 0.5 ** (t // s)), t
    # no drop is listed past the run's end (epoch 8 = step 40 would be the next)
    assert lr_at(opt, 45) == pytest.approx(LR0 * 0.125)


def test_piecewise_schedule_with_one_drop_at_least():
    cfg = {"lr_schedule": "piecewise", "learning_rate": LR0, "schedule_epochs": 50.0, "epochs": 3}
    opt = M.build_optimizer(cfg, steps_per_epoch=2)
    assert lr_at(opt, 5) == pytest.approx(LR0)


def test_plateau_schedule_is_a_float_and_a_callback():
    cfg = {"lr_schedule": "plateau", "learning_rate": LR0, "schedule_factor": 0.2, "schedule_patience": 4}
    assert M.build_schedule(cfg) == LR0
    (cb,) = M.schedule_callbacks(cfg)
    assert type(cb) is keras.callbacks.ReduceLROnPlateau
    assert cb.monitor == "val_loss"
    assert cb.factor == pytest.approx(0.2)
    assert cb.patience == 4


@pytest.mark.parametrize("kind", ["constant", "power", "exponential", "piecewise", "one_cycle"])
def test_only_plateau_has_callbacks(kind):
    assert M.schedule_callbacks({"lr_schedule": kind}) == []


def test_one_cycle_closed_form():
    lr0, peak = 0.001, 0.01
    sched = M.OneCycle(initial_lr=lr0, max_lr=peak, total_steps=101)  # last step: 100

    def at(t):
        return float(sched(t))

    assert at(0) == pytest.approx(lr0, rel=1e-5)
    assert at(45) == pytest.approx(peak, rel=1e-5)  # end of warm-up: 45% of the run
    assert at(90) == pytest.approx(lr0, rel=1e-5)  # end of descent: 90%
    assert at(100) == pytest.approx(lr0 / 1000, rel=1e-4)  # last step
    assert at(500) == pytest.approx(lr0 / 1000, rel=1e-4)  # stays there
    assert at(22) == pytest.approx(lr0 + (peak - lr0) * 22 / 45, rel=1e-5)
    assert at(60) == pytest.approx(peak - (peak - lr0) * 15 / 45, rel=1e-5)
    assert at(95) == pytest.approx(lr0 - (lr0 - lr0 / 1000) * 5 / 10, rel=1e-5)
    assert at(44) < at(45) > at(46)


def test_one_cycle_from_config_counts_the_whole_run():
    cfg = {"lr_schedule": "one_cycle", "learning_rate": 0.002, "schedule_max_lr": 0.02, "epochs": 5}
    opt = M.build_optimizer(cfg, steps_per_epoch=20)  # 100 steps, last is 99
    sched = M.build_schedule(cfg, steps_per_epoch=20)
    assert isinstance(sched, M.OneCycle)
    assert sched.total_steps == 100
    assert lr_at(opt, 0) == pytest.approx(0.002, rel=1e-5)
    assert lr_at(opt, 99) == pytest.approx(0.002 / 1000, rel=1e-4)
    peak_step = 0.45 * 99
    assert max(lr_at(opt, t) for t in range(100)) <= 0.02 * (1 + 1e-6)
    assert lr_at(opt, round(peak_step)) == pytest.approx(0.02, rel=0.03)


def test_one_cycle_config_round_trip():
    sched = M.OneCycle(initial_lr=0.001, max_lr=0.01, total_steps=50)
    again = M.OneCycle.from_config(sched.get_config())
    for t in (0, 10, 22, 40, 47, 49):
        assert float(again(t)) == pytest.approx(float(sched(t)))
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sched))
    assert isinstance(revived, M.OneCycle)


# --------------------------------------------------------------------------- MC dropout


@pytest.mark.parametrize(
    "mc_cls, plain_cls",
    [(M.MCDropout, L.Dropout), (M.MCAlphaDropout, L.AlphaDropout)],
)
def test_mc_layers_are_stochastic_at_inference(mc_cls, plain_cls):
    x = np.ones((4, 256), "float32")
    mc = mc_cls(0.5)
    a, b = (keras.ops.convert_to_numpy(mc(x)) for _ in range(2))
    assert not np.allclose(a, x)
    assert not np.allclose(a, b)
    assert isinstance(mc, plain_cls)
    plain = plain_cls(0.5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(plain(x)), x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(plain(x, training=False)), x)


def _perturbed(model, seed=0):
    """Random weights everywhere, so equal weights after a copy mean something (variances > 0)."""
    rng = np.random.default_rng(seed)
    model.set_weights([np.abs(rng.normal(size=w.shape)).astype(w.dtype) + 0.5 for w in model.get_weights()])
    return model


def _bn_stats(model):
    return [
        (keras.ops.convert_to_numpy(bn.moving_mean), keras.ops.convert_to_numpy(bn.moving_variance))
        for bn in model.layers
        if isinstance(bn, L.BatchNormalization)
    ]


def test_to_mc_swaps_dropout_and_keeps_everything_else():
    model = _perturbed(build(input_batch_norm=True, batch_norm="after", dropout=0.3, n_classes=4))
    mc = M.to_mc(model)
    swapped = [M.MCDropout if c is L.Dropout else c for c in classes(model)]
    assert classes(mc) == swapped
    assert [layer.name for layer in mc.layers] == [layer.name for layer in model.layers]
    for old, new in zip(model.layers, mc.layers):
        if not isinstance(old, L.Dropout):
            assert old.get_config() == new.get_config()
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), mc.get_weights()))
    assert mc.get_layer("dropout_1").rate == pytest.approx(0.3)
    # the original is left alone
    assert classes(model).count(L.Dropout) == 2 and M.MCDropout not in classes(model)


def test_to_mc_alpha_dropout():
    model = build(activation="selu", initializer="lecun_normal", dropout=0.2, dropout_kind="alpha")
    mc = M.to_mc(model)
    assert classes(mc).count(M.MCAlphaDropout) == 2
    assert M.has_dropout(mc)


def test_to_mc_samples_vary_while_batch_norm_stays_in_inference_mode():
    model = _perturbed(build(input_batch_norm=True, batch_norm="before", dropout=0.5, n_classes=4))
    before = _bn_stats(model)
    mc = M.to_mc(model)
    x = np.random.default_rng(1).normal(size=(8, 4)).astype("float32")
    samples = [keras.ops.convert_to_numpy(mc(x)) for _ in range(10)]
    samples.append(keras.ops.convert_to_numpy(mc(x, training=False)))
    assert not np.allclose(samples[0], samples[1])
    for (m0, v0), (m1, v1) in zip(before, _bn_stats(mc)):
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(v0, v1)
    # the original model is deterministic at inference
    np.testing.assert_array_equal(*(keras.ops.convert_to_numpy(model(x)) for _ in range(2)))


def test_to_mc_without_dropout_matches_inference_exactly():
    # BN in training mode would normalize with the batch's statistics and change the output
    model = _perturbed(build(input_batch_norm=True, batch_norm="after", n_classes=4))
    x = np.random.default_rng(2).normal(size=(8, 4)).astype("float32")
    mc = M.to_mc(model)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(mc(x)), keras.ops.convert_to_numpy(model(x, training=False)), rtol=1e-5
    )
    assert not M.has_dropout(mc)


# --------------------------------------------------------------------------- saving


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # saved before any step
def test_save_and_load_with_one_cycle(tmp_path):
    cfg = {"lr_schedule": "one_cycle", "learning_rate": 0.001, "schedule_max_lr": 0.01, "epochs": 3}
    model = _perturbed(build(steps_per_epoch=10, **cfg))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.optimizer.get_config()["learning_rate"]["class_name"] == "OneCycle"
    assert lr_at(loaded.optimizer, 13) == pytest.approx(0.001 + 0.009 * 13 / (0.45 * 29), rel=1e-5)
    x = np.random.default_rng(3).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), rtol=1e-6)


def test_save_and_load_mc_model(tmp_path):
    model = _perturbed(build(batch_norm="after", dropout=0.5))
    mc = M.to_mc(model)
    path = tmp_path / "mc.keras"
    mc.save(path)
    loaded = keras.saving.load_model(path)
    assert classes(loaded) == classes(mc)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), mc.get_weights()))
    x = np.ones((4, 4), "float32")
    assert not np.allclose(*(keras.ops.convert_to_numpy(loaded(x)) for _ in range(2)))


# --------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("input_shape,fraction,layers", [
    ((8, 8), 1 / 8, ["augment_channels", "augment_shift"]),
    ((28, 28, 1), 1 / 28, ["augment_shift"]),
    ((12, 6, 3), 1 / 6, ["augment_shift"]),
    ((10,), 0.0, []),
])
def test_auto_shift_is_one_pixel_for_images_and_none_for_flat_features(input_shape, fraction, layers):
    model = build(input_shape=input_shape, augment_shift="auto")
    names = [layer.name for layer in model.layers]
    assert names[: names.index("flatten")] == layers
    assert M.augment_fraction({"augment_shift": "auto"}, input_shape) == pytest.approx(fraction)
    if layers:
        shift = model.get_layer("augment_shift")
        assert isinstance(shift, L.RandomTranslation)
        assert shift.height_factor == pytest.approx(fraction) and shift.width_factor == pytest.approx(fraction)
    assert "augment_shift" not in [layer.name for layer in build(input_shape=input_shape).layers]  # off by default


def test_an_explicit_shift_on_flat_features_is_refused():
    with pytest.raises(ConfigError, match=r"^augment_shift=0.2 needs image inputs .* shape \(10,\); set augment_shift: 0"):
        build(input_shape=(10,), augment_shift=0.2)
    with pytest.raises(ConfigError, match="augment_shift must be"):
        build(input_shape=(8, 8), augment_shift=0.5)


def test_one_pixel_shift_moves_a_pixel_by_at_most_one_in_each_direction():
    """A single lit pixel, shifted 300 times: it lands on each of the 9 one-pixel offsets and nowhere else."""
    model = build(input_shape=(8, 8), augment_shift="auto")
    shift = model.get_layer("augment_shift")
    image = np.zeros((1, 8, 8, 1), "float32")
    image[0, 3, 4, 0] = 1.0
    offsets = set()
    for _ in range(300):
        out = keras.ops.convert_to_numpy(shift(image, training=True))[0, :, :, 0]
        assert out.sum() == pytest.approx(1.0) and set(np.unique(out)) <= {0.0, 1.0}
        (row, col), = np.argwhere(out == 1.0)
        offsets.add((int(row) - 3, int(col) - 4))
    assert offsets == {(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)}


def test_shift_is_off_at_inference_and_in_mc_dropout():
    """predict, training=False and MC dropout see the images as they are; training shifts them.

    As for every Keras random preprocessing layer, a bare ``model(x)`` counts as training."""
    x = np.random.default_rng(0).random((6, 8, 8)).astype("float32")
    shifted = build(input_shape=(8, 8), augment_shift="auto", n_neurons=16)
    flat = keras.Model(shifted.inputs, shifted.get_layer("flatten").output)
    as_is = x.reshape(6, 64)
    assert np.array_equal(flat.predict(x, verbose=0), as_is)
    assert np.array_equal(keras.ops.convert_to_numpy(flat(x, training=False)), as_is)
    assert not np.array_equal(keras.ops.convert_to_numpy(flat(x, training=True)), as_is)
    plain = build(input_shape=(8, 8), n_neurons=16)
    plain.set_weights(shifted.get_weights())
    expected = plain.predict(x, verbose=0)
    np.testing.assert_allclose(shifted.predict(x, verbose=0), expected, rtol=1e-6)
    np.testing.assert_allclose(M.to_mc(shifted).predict(x, verbose=0), expected, rtol=1e-6)  # no dropout: exact


def test_a_shifting_model_saves_and_loads(tmp_path):
    model = _perturbed(build(input_shape=(8, 8), augment_shift=0.25))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("augment_shift").height_factor == pytest.approx(0.25)
    x = np.random.default_rng(1).random((3, 8, 8)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), rtol=1e-6)


# --------------------------------------------------------------------------- fitting


def test_tiny_fit_with_every_option_on():
    # the optimizer here is Nesterov SGD: the Adam family is checked above and costs seconds to trace
    cfg = {
        "n_hidden": 2,
        "n_neurons": 16,
        "width_shape": "funnel",
        "activation": "selu",
        "initializer": "lecun_normal",
        "batch_norm": "before",
        "input_batch_norm": True,
        "bn_momentum": 0.9,
        "dropout": 0.1,
        "dropout_kind": "alpha",
        "l1": 1e-4,
        "l2": 1e-4,
        "max_norm": 0.5,
        "optimizer": "nesterov",
        "momentum": 0.9,
        "clipnorm": 1.0,
        "lr_schedule": "one_cycle",
        "learning_rate": 0.01,
        "schedule_max_lr": 0.1,
        "epochs": 2,
    }
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 3, 2)).astype("float32"), rng.integers(0, 3, 24)
    model = M.build_model(cfg, (3, 2), 3, steps_per_epoch=3, seed=0)
    history = model.fit(x, y, epochs=2, batch_size=8, validation_data=(x[:8], y[:8]), verbose=0)
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(np.isfinite(history.history["loss"]))
    assert int(model.optimizer.iterations) == 6
    # the schedule ran inside the compiled step and has reached its end: lr0 / 1000
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01 / 1000, rel=1e-4)
    for dense in hidden_dense(model):
        norms = np.sqrt(np.sum(keras.ops.convert_to_numpy(dense.kernel) ** 2, axis=0))
        assert np.all(norms <= 0.5 + 1e-4)


def test_binary_metric_is_named_accuracy():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 4)).astype("float32"), rng.integers(0, 2, 8)
    model = build(n_classes=2)
    result = model.evaluate(x, y, verbose=0, return_dict=True)
    assert set(result) == {"loss", "accuracy"}
    probs = keras.ops.convert_to_numpy(model(x)).ravel()
    assert result["accuracy"] == pytest.approx(np.mean((probs > 0.5) == y))


def test_plateau_callback_lowers_the_optimizer_rate():
    cfg = {"lr_schedule": "plateau", "learning_rate": 0.01, "schedule_patience": 2, "schedule_factor": 0.5}
    model = build(**cfg)
    (cb,) = M.schedule_callbacks(cfg)
    cb.set_model(model)
    cb.on_train_begin()
    for epoch, val_loss in enumerate([1.0, 0.9, 0.95, 0.95]):  # no improvement on epochs 2 and 3
        cb.on_epoch_end(epoch, {"val_loss": val_loss})
    assert float(model.optimizer.learning_rate) == pytest.approx(0.005)
