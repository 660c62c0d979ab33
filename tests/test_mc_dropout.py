"""Tests for pipelines.mc_dropout: metrics against hand-computed values and sklearn, the fast
sampler against the naive loop and a layer-by-layer reference, and the plots."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipelines import mc_dropout as mc
from pipelines import mc_plots
from pipelines import uncertainty as unc
from pipelines import subnetworks

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# =========================================================================== metrics


def test_uniform_predictions_give_log_k_nll_and_entropy_and_brier_0_9():
    probs = np.full((3, 5, 10), 0.1)
    y = np.array([0, 3, 9, 1, 5])
    assert unc.nll(probs, y) == pytest.approx(math.log(10))
    assert unc.entropy(probs.mean(axis=0)) == pytest.approx(np.full(5, math.log(10)))
    assert unc.brier(probs.mean(axis=0), y) == pytest.approx(0.9)  # 9 * 0.1^2 + 0.9^2
    assert unc.mutual_information(probs) == pytest.approx(np.zeros(5))


def test_entropy_treats_0_log_0_as_0():
    h = unc.entropy(np.array([[1.0, 0.0], [0.5, 0.5]]))
    assert np.all(np.isfinite(h))
    assert h == pytest.approx([0.0, math.log(2)])


def test_mutual_information_is_zero_when_samples_agree_and_hand_value_when_they_disagree():
    same = np.array([[[0.2, 0.8], [0.6, 0.4]]] * 4)  # 4 identical samples of 2 examples
    assert unc.mutual_information(same) == pytest.approx([0.0, 0.0], abs=1e-12)

    def h(*p):
        return -sum(q * math.log(q) for q in p if q > 0)

    # example 0: samples [0.9, 0.1] and [0.5, 0.5]; mean [0.7, 0.3]
    # example 1: samples [1, 0] and [0, 1]: each certain, mean uniform -> MI = log 2
    probs = np.array([[[0.9, 0.1], [1.0, 0.0]], [[0.5, 0.5], [0.0, 1.0]]])
    expected_0 = h(0.7, 0.3) - (h(0.9, 0.1) + h(0.5, 0.5)) / 2
    assert expected_0 > 0
    assert unc.mutual_information(probs) == pytest.approx([expected_0, math.log(2)])


def test_ece_is_zero_for_a_confident_correct_model():
    y = np.array([0, 2, 1, 1])
    assert unc.ece(np.eye(3)[y], y) == 0.0


def test_ece_hand_computed_in_two_bins():
    # n_bins=4: bins (0.5, 0.75] and (0.75, 1] are the only ones used with 2 classes.
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.35, 0.65]])
    y = np.array([0, 1, 1, 0, 0])  # right, wrong, right, right, wrong
    # high bin: conf (0.9 + 0.8)/2 = 0.85, acc 1/2 -> 2/5 * 0.35 = 0.14
    # mid bin:  conf (0.7 + 0.6 + 0.65)/3 = 0.65, acc 2/3 -> 3/5 * |2/3 - 0.65| = 0.01
    assert unc.ece(p, y, n_bins=4) == pytest.approx(0.15)


def test_brier_bounds():
    y = np.array([0, 1])
    assert unc.brier(np.eye(2)[y], y) == 0.0
    assert unc.brier(np.eye(2)[1 - y], y) == pytest.approx(2.0)


def test_nll_matches_naive_log_of_mean_for_moderate_probs():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(7, 9))  # T=7, N=9, K=4
    y = rng.integers(0, 4, size=9)
    naive = -np.mean([math.log(np.mean(probs[:, i, y[i]])) for i in range(9)])
    assert unc.nll(probs, y) == pytest.approx(naive, rel=1e-10)
    # deterministic (N, K) is T = 1
    assert unc.nll(probs[0], y) == pytest.approx(-np.mean(np.log(probs[0, np.arange(9), y])))


def test_nll_stays_finite_for_tiny_probs():
    probs = np.full((5, 3, 2), 0.0)
    probs[..., 0] = 1e-300
    probs[..., 1] = 1.0 - 1e-300
    y = np.zeros(3, dtype=int)
    value = unc.nll(probs, y)
    assert np.isfinite(value)
    assert value == pytest.approx(-math.log(1e-12))  # clipped at 1e-12
    # one sample with a moderate probability dominates the mean
    probs[0, :, 0] = 0.5
    assert unc.nll(probs, y) == pytest.approx(-math.log(0.5 / 5), rel=1e-6)


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(200), 1)  # many ties
    is_error = rng.random(200) < 0.3
    assert unc.auroc(scores, is_error) == pytest.approx(roc_auc_score(is_error, scores))
    assert unc.auroc(np.arange(4), np.array([0, 0, 1, 1])) == 1.0
    assert unc.auroc(np.arange(4), np.array([1, 1, 0, 0])) == 0.0


def test_auroc_is_nan_with_one_class():
    assert math.isnan(unc.auroc(np.arange(5), np.zeros(5, dtype=bool)))
    assert math.isnan(unc.auroc(np.arange(5), np.ones(5, dtype=bool)))


def test_coverage_accuracy_hand_example():
    confidence = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    correct = np.array([1, 1, 0, 1, 0, 1, 0, 0, 1, 0])
    order = np.random.default_rng(2).permutation(10)  # input order must not matter
    got = unc.coverage_accuracy(confidence[order], correct[order])
    assert got == pytest.approx({0.5: 3 / 5, 0.8: 4 / 8, 0.9: 5 / 9, 0.95: 5 / 10})
    assert unc.coverage_accuracy(confidence, correct, coverages=(0.1,)) == {0.1: 1.0}


def test_rejection_curve_ends_at_full_coverage_and_overall_accuracy():
    confidence = np.array([0.2, 0.9, 0.5, 0.7])
    correct = np.array([0, 1, 1, 0])
    coverage, accuracy = unc.rejection_curve(confidence, correct)
    assert coverage == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert accuracy == pytest.approx([1.0, 0.5, 2 / 3, 0.5])  # kept in order 0.9, 0.7, 0.5, 0.2


def test_binary_to_two_class():
    expected = np.array([[0.8, 0.2], [0.3, 0.7]])
    assert unc.binary_to_two_class(np.array([[0.2], [0.7]])) == pytest.approx(expected)
    assert unc.binary_to_two_class(np.array([0.2, 0.7])) == pytest.approx(expected)
    assert unc.binary_to_two_class(np.full((3, 4, 1), 0.25)).shape == (3, 4, 2)


def test_summarize_keys_and_values():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), size=(6, 40))
    y = rng.integers(0, 3, size=40)
    det = rng.dirichlet(np.ones(3), size=40)
    out = unc.summarize(probs, y, deterministic_probs=det)
    common = {"accuracy", "nll", "brier", "ece", "entropy", "mutual_info", "auroc_max_prob", "auroc_entropy"}
    common |= {"acc_at_50", "acc_at_80", "acc_at_90", "acc_at_95"}
    assert set(out) == {"mc", "deterministic"}
    assert set(out["mc"]) == common | {"auroc_mutual_info"}
    assert set(out["deterministic"]) == common
    assert out["deterministic"]["mutual_info"] == 0.0
    p_mean = probs.mean(axis=0)
    assert out["mc"]["accuracy"] == pytest.approx(np.mean(p_mean.argmax(1) == y))
    assert out["deterministic"]["accuracy"] == pytest.approx(np.mean(det.argmax(1) == y))
    errors = p_mean.argmax(1) != y
    assert out["mc"]["auroc_entropy"] == pytest.approx(roc_auc_score(errors, unc.entropy(p_mean)))
    assert all(isinstance(v, float) for part in out.values() for v in part.values())
    assert set(unc.summarize(probs, y)) == {"mc"}


def test_summarize_reads_a_single_output_as_sigmoid():
    probs = np.array([[[0.9], [0.2]], [[0.7], [0.4]]])  # T=2, N=2, sigmoid
    out = unc.summarize(probs, np.array([1, 0]))
    assert out["mc"]["accuracy"] == 1.0
    assert out["mc"]["nll"] == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)


# =========================================================================== sampler


@pytest.fixture(scope="module")
def keras_mod():
    import keras

    return keras


def _mlp(keras, *, n_in=6, out=4, activation="softmax", bn=False, first_dropout=False, seed=0):
    keras.utils.set_random_seed(seed)
    L = keras.layers
    layers = [keras.Input((n_in,))]
    if first_dropout:
        layers.append(L.Dropout(0.5))
    layers.append(L.Dense(16, activation="relu"))
    if bn:
        layers.append(L.BatchNormalization())
    layers += [L.Dropout(0.5), L.Dense(16, activation="relu")]
    if bn:  # one in the deterministic prefix, one in the stochastic suffix
        layers.append(L.BatchNormalization())
    layers += [L.Dropout(0.5), L.Dense(out, activation=activation)]
    return keras.Sequential(layers)


@pytest.fixture(scope="module")
def mlp(keras_mod):
    return _mlp(keras_mod)


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(4).normal(size=(16, 6)).astype(np.float32)


def _assert_same_mean(a: mc.MCResult, b: mc.MCResult):
    """Means agree within 5 standard errors of their difference (plus float slack)."""
    se = np.sqrt(a.std**2 / len(a.samples) + b.std**2 / len(b.samples))
    assert np.all(np.abs(a.mean - b.mean) <= 5 * se + 1e-4)


def _naive(model, inputs, samples: int, copies: int = 100) -> mc.MCResult:
    """The naive loop on ``copies`` stacked copies of the inputs: ``samples * copies`` draws
    per example from ``samples`` model calls (the naive loop draws a mask per row)."""
    draws = mc.mc_predict_naive(model, np.tile(inputs, (copies, 1)), samples=samples).samples
    return mc.MCResult(draws.reshape(samples * copies, len(inputs), -1))


@pytest.fixture(scope="module")
def naive_draws(mlp, inputs):
    return _naive(mlp, inputs, samples=20)


@pytest.mark.parametrize("shared_masks", [False, True])
def test_fast_and_naive_sample_the_same_predictive_mean(mlp, inputs, naive_draws, shared_masks):
    fast = mc.mc_predict(mlp, inputs, samples=2000, seed=0, shared_masks=shared_masks)
    naive = naive_draws
    assert fast.samples.shape == (2000, 16, 4)
    assert fast.samples.dtype == np.float32
    assert fast.samples.sum(axis=-1) == pytest.approx(np.ones((2000, 16)), abs=1e-5)
    assert fast.std.min() > 0  # dropout really is on
    _assert_same_mean(fast, naive)


def test_two_passes_differ_and_a_seed_repeats(mlp, inputs):
    a = mc.mc_predict(mlp, inputs, samples=5)
    b = mc.mc_predict(mlp, inputs, samples=5)
    assert not np.allclose(a.samples, b.samples)
    s1 = mc.mc_predict(mlp, inputs, samples=5, seed=7)
    s2 = mc.mc_predict(mlp, inputs, samples=5, seed=7)
    np.testing.assert_array_equal(s1.samples, s2.samples)
    assert not np.allclose(mc.mc_predict(mlp, inputs, samples=5, seed=8).samples, s1.samples)
    # the seed is scoped to the call: unseeded calls afterwards do not repeat it
    assert not np.allclose(mc.mc_predict(mlp, inputs, samples=5).samples, s1.samples)


def test_samples_are_placed_per_example_across_chunks(keras_mod, inputs):
    keras = keras_mod
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dropout(1e-7),
         keras.layers.Dense(3, activation="softmax")]
    )  # fmt: skip  (a dropout that practically never drops: every sample is the deterministic one)
    result = mc.mc_predict(model, inputs, samples=3, batch_size=5, max_elements=10)
    det = mc.deterministic_predict(model, inputs)
    assert result.samples.shape == (3, 16, 3)
    np.testing.assert_allclose(result.samples, np.broadcast_to(det, (3, 16, 3)), rtol=1e-5, atol=1e-6)


def _bn_stats(model, keras) -> list[np.ndarray]:
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(layers) == 2
    return [np.array(v) for layer in layers for v in (layer.moving_mean, layer.moving_variance)]


def test_batch_norm_stays_in_inference_mode(keras_mod, inputs):
    keras = keras_mod
    model = _mlp(keras, bn=True)
    rng = np.random.default_rng(7)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=16).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=16).astype(np.float32))
    before = _bn_stats(model, keras)

    fast = mc.mc_predict(model, inputs, samples=300, seed=1)
    mc.mc_predict(model, inputs, samples=5, shared_masks=True)
    for after, was in zip(_bn_stats(model, keras), before, strict=True):
        np.testing.assert_array_equal(after, was)

    # reference: layer by layer on 300 stacked copies, dropout on, batch norm in inference mode
    h = np.tile(inputs, (300, 1))
    for layer in model.layers:
        h = layer(h, training=isinstance(layer, keras.layers.Dropout))
    reference = mc.MCResult(np.asarray(h).reshape(300, len(inputs), -1))
    _assert_same_mean(fast, reference)

    # the naive baseline runs batch norm in training mode and moves its statistics
    mc.mc_predict_naive(model, inputs, samples=1)
    assert not np.array_equal(_bn_stats(model, keras)[0], before[0])


def test_model_without_dropout_gives_one_deterministic_sample(keras_mod, inputs, caplog):
    keras = keras_mod
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
    assert not mc.has_dropout(model)
    assert mc.first_dropout_index(model) is None
    with caplog.at_level(logging.INFO, logger="pipelines.mc_dropout"):
        result = mc.mc_predict(model, inputs, samples=50)
    assert result.samples.shape == (1, 16, 3)
    np.testing.assert_allclose(result.samples[0], np.asarray(model(inputs)), rtol=1e-6)
    assert "dropout" in caplog.text
    assert result.mutual_info == pytest.approx(np.zeros(16))


def test_sigmoid_model_gives_two_classes(keras_mod, inputs):
    model = _mlp(keras_mod, out=1, activation="sigmoid")
    result = mc.mc_predict(model, inputs, samples=10)
    assert result.samples.shape == (10, 16, 2)
    np.testing.assert_allclose(result.samples.sum(axis=-1), 1.0, rtol=1e-6)
    assert mc.deterministic_predict(model, inputs).shape == (16, 2)
    assert mc.mc_predict_naive(model, inputs, samples=2).samples.shape == (2, 16, 2)


def test_dropout_as_first_layer_gives_an_empty_prefix(keras_mod, inputs):
    model = _mlp(keras_mod, first_dropout=True)
    assert mc.first_dropout_index(model) == 0
    result = mc.mc_predict(model, inputs, samples=8)
    assert result.samples.shape == (8, 16, 4)
    assert result.std.max() > 0


def test_first_dropout_index_and_deterministic_predict(keras_mod, mlp, inputs):
    keras = keras_mod
    assert mc.first_dropout_index(mlp) == 1  # Dense, Dropout, ...
    assert mc.has_dropout(mlp)
    nested = keras.Sequential([keras.Input((6,)), keras.Sequential([keras.layers.Dense(4), keras.layers.Dropout(0.3)])])
    assert mc.first_dropout_index(nested) == 1
    alpha = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.AlphaDropout(0.1)])
    assert mc.first_dropout_index(alpha) == 1
    zero_rate = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.Dropout(0.0)])
    assert not mc.has_dropout(zero_rate)
    det = mc.deterministic_predict(mlp, inputs, batch_size=5)
    np.testing.assert_allclose(det, np.asarray(mlp(inputs, training=False)), rtol=1e-5, atol=1e-7)


def _bn_prelu_swish(keras):
    """Dense (no bias), batch norm, PReLU, dropout; Dense, swish, batch norm, dropout; softmax."""
    keras.utils.set_random_seed(2)
    L = keras.layers
    model = keras.Sequential([
        keras.Input((6,)), L.Dense(16, use_bias=False), L.BatchNormalization(), L.PReLU(), L.Dropout(0.3),
        L.Dense(12, use_bias=False), L.BatchNormalization(), L.Activation("swish"), L.Dropout(0.3),
        L.Dense(3, activation="softmax"),
    ])  # fmt: skip
    rng = np.random.default_rng(3)
    for layer in model.layers:  # batch norm statistics and PReLU slopes far from their identity defaults
        if isinstance(layer, L.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=n).astype(np.float32))
            layer.gamma.assign(rng.normal(size=n).astype(np.float32))
            layer.beta.assign(rng.normal(size=n).astype(np.float32))
        if isinstance(layer, L.PReLU):
            layer.alpha.assign(rng.uniform(0.1, 0.5, size=layer.alpha.shape).astype(np.float32))
    return model


def _dropout_first_sigmoid(keras):
    keras.utils.set_random_seed(3)
    L = keras.layers
    return keras.Sequential([
        keras.Input((6,)), L.Dropout(0.2), L.Dense(16, activation="selu"), L.BatchNormalization(), L.Dropout(0.4),
        L.Dense(1, activation="sigmoid"),
    ])  # fmt: skip


@pytest.mark.parametrize("build", [lambda k: _mlp(k), _bn_prelu_swish, _dropout_first_sigmoid],
                         ids=["relu-mlp", "bn-prelu-swish", "dropout-first-sigmoid"])
def test_subnetworks_give_the_same_samples_as_masking_every_unit(keras_mod, inputs, build):
    """With the same seed (so the same masks), computing only the kept units changes nothing but rounding."""
    model = build(keras_mod)
    layers = mc._flat_layers(model)
    split = mc.first_dropout_index(model)
    width = int(mc._run_layers(layers[:split], inputs[:1]).shape[1])
    assert subnetworks.supports(layers[split:], width)
    sparse = mc.mc_predict(model, inputs, samples=40, seed=11, shared_masks=True)
    dense = mc.mc_predict(model, inputs, samples=40, seed=11, shared_masks=True, subnetworks_ok=False)
    assert sparse.samples.shape == dense.samples.shape
    assert sparse.std.max() > 0.01  # dropout really is on
    np.testing.assert_allclose(sparse.samples, dense.samples, rtol=1e-5, atol=1e-6)


def test_suffixes_the_subnetworks_cannot_run_take_the_general_path(keras_mod, inputs):
    keras = keras_mod
    L = keras.layers

    def built(*layers):
        return keras.Sequential([keras.Input((6,)), *layers]).layers

    def suffix(*layers):
        return built(L.Dropout(0.5), *layers)

    width = 6
    assert subnetworks.supports(suffix(L.Dense(4, activation="softmax")), width)
    assert not subnetworks.supports(built(L.AlphaDropout(0.1), L.Dense(4)), width)
    assert not subnetworks.supports(built(L.GaussianDropout(0.1), L.Dense(4)), width)
    assert not subnetworks.supports(built(L.Dropout(0.5, noise_shape=(1, 6)), L.Dense(4)), width)
    # softmax is not elementwise: it needs every unit, but the next dropout keeps only some
    assert not subnetworks.supports(suffix(L.Dense(8, activation="softmax"), L.Dropout(0.5), L.Dense(4)), width)
    assert not subnetworks.supports(suffix(L.Dense(8), L.Activation("softmax"), L.Dropout(0.5), L.Dense(4)), width)
    assert not subnetworks.supports(suffix(L.Dense(8), L.LayerNormalization(), L.Dropout(0.5), L.Dense(4)), width)
    assert not subnetworks.supports(suffix(L.Activation("relu")), width)  # no Dense layer after the dropout
    assert not subnetworks.supports(suffix(L.Dropout(0.3), L.Dense(4)), width)  # two dropouts in a row

    keras.utils.set_random_seed(4)
    gaussian = keras.Sequential([keras.Input((6,)), L.Dense(8, activation="relu"), L.GaussianDropout(0.3),
                                 L.Dense(3, activation="softmax")])
    result = mc.mc_predict(gaussian, inputs, samples=20, shared_masks=True)
    assert result.samples.shape == (20, 16, 3)
    assert result.std.max() > 0


def test_functional_model_is_refused(keras_mod):
    keras = keras_mod
    x = keras.Input((3,))
    model = keras.Model(x, keras.layers.Dense(2, activation="softmax")(keras.layers.Dropout(0.5)(x)))
    assert mc.has_dropout(model)
    with pytest.raises(TypeError, match="Sequential"):
        mc.mc_predict(model, np.zeros((2, 3)))


def test_bad_sample_count_is_refused(mlp, inputs):
    with pytest.raises(ValueError, match="samples >= 1"):
        mc.mc_predict(mlp, inputs, samples=0)


# =========================================================================== plots and artifact


@pytest.fixture(scope="module")
def predictions():
    rng = np.random.default_rng(6)
    probs = rng.dirichlet(np.ones(3) * 0.5, size=(8, 60))
    y = rng.integers(0, 3, size=60)
    return probs, y


def _is_png(path) -> bool:
    return path.exists() and path.read_bytes()[:8] == PNG_MAGIC


def test_plots_write_pngs(tmp_path, predictions):
    probs, y = predictions
    p_mean = probs.mean(axis=0)
    correct = p_mean.argmax(1) == y
    paths = [
        mc_plots.plot_reliability(p_mean, y, tmp_path / "reliability.png", deterministic_probs=probs[0]),
        mc_plots.plot_reliability(p_mean, y, tmp_path / "sub" / "reliability_mc.png", n_bins=5, title="MC only"),
        mc_plots.plot_coverage(
            {"MC": p_mean.max(1), "det": probs[0].max(1)},
            {"MC": correct, "det": probs[0].argmax(1) == y},
            tmp_path / "coverage.png",
        ),
        mc_plots.plot_uncertainty_hist(unc.entropy(p_mean), correct, tmp_path / "hist.png"),
    ]
    assert all(_is_png(path) for path in paths)


def test_save_predictions_has_exactly_the_keys(tmp_path, predictions):
    probs, y = predictions
    result = mc.MCResult(probs)
    path = unc.save_predictions(
        tmp_path / "predictions",
        labels=y,
        probs_mean=result.mean,
        probs_std=result.std,
        entropy=result.entropy,
        mutual_info=result.mutual_info,
        deterministic_probs=probs[0],
    )
    assert path.name == "predictions.npz"
    with np.load(path) as data:
        assert set(data.files) == {"labels", "probs_mean", "probs_std", "entropy", "mutual_info", "deterministic_probs"}
        np.testing.assert_array_equal(data["labels"], y)
        np.testing.assert_allclose(data["probs_mean"], probs.mean(axis=0))
    with pytest.raises(ValueError, match="one row per example"):
        unc.save_predictions(
            tmp_path / "bad.npz", labels=y[:3], probs_mean=result.mean, probs_std=result.std,
            entropy=result.entropy, mutual_info=result.mutual_info, deterministic_probs=probs[0],
        )  # fmt: skip
