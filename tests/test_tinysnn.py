"""tinySNN quantization: rounding definitions, unbiased stochastic rounding, quantized state in
the LIF kernel, Pareto front, in-training vs post-training exploration, errors."""
import copy

import pytest
import torch

from sparsesnn import FixedPoint
from sparsesnn.compress import evaluate, fit, reset_states
from sparsesnn.compress.state import get_state
from sparsesnn.compress.tinysnn import (InTrainingQuantizer, QuantConfig, apply_config, explore,
                                        memory_bytes, pareto_front, quantize_neurons,
                                        quantize_weights, smallest_meeting, state_format)
from sparsesnn.models import SpikingMLP
from sparsesnn.quant import round_values

X = torch.tensor([-2.6, -1.5, -1.25, -0.3, 0.0, 0.1, 0.5, 0.74, 1.125, 2.5, 3.3])


def test_fixed_point_rounding_definitions():
    step = 0.25
    k = X / step
    trunc = FixedPoint(8, 2, "truncate").quantize(X)
    near = FixedPoint(8, 2, "nearest").quantize(X)
    torch.testing.assert_close(trunc, torch.trunc(k) * step)  # toward zero
    torch.testing.assert_close(near, torch.sign(k) * torch.floor(k.abs() + 0.5) * step)  # half away
    sto = FixedPoint(8, 2, "stochastic", seed=3).quantize(X)
    assert bool(((sto == torch.floor(k) * step) | (sto == torch.ceil(k) * step)).all())
    # saturation at the format's range
    assert float(FixedPoint(4, 2, "nearest").quantize(torch.tensor([100.0]))) == FixedPoint(4, 2).max


def test_weight_rounding_definitions():
    k = X * 3.7
    torch.testing.assert_close(round_values(k, "truncate"), torch.trunc(k))
    torch.testing.assert_close(round_values(k, "nearest"), torch.round(k))
    s = round_values(k, "stochastic", seed=1)
    assert bool(((s == torch.floor(k)) | (s == torch.ceil(k))).all())


@pytest.mark.parametrize("value", [0.3, -0.3, 0.1, 0.61, -1.9])
def test_stochastic_rounding_unbiased(value):
    n = 200_000
    x = torch.full((n,), value)
    fp = FixedPoint(8, 2, "stochastic", seed=11).quantize(x)
    # mean within 5 standard errors of the true value (std of one draw <= step / 2)
    assert abs(float(fp.mean()) - value) < 5 * 0.125 / n ** 0.5
    w = round_values(x * 4, "stochastic", seed=5) / 4
    assert abs(float(w.mean()) - value) < 5 * 0.125 / n ** 0.5
    # nearest and truncate are biased on the same input (unless value is on the grid)
    assert abs(float(FixedPoint(8, 2, "truncate").quantize(x).mean()) - value) > 0.01


def test_quantized_weights_follow_rounding():
    torch.manual_seed(0)
    m = SpikingMLP(8, (16,), 4, T=2)
    w = m.fc1.weight.detach().clone()
    mt, mn = copy.deepcopy(m), copy.deepcopy(m)
    quantize_weights(mt, 4, "truncate")
    quantize_weights(mn, 4, "nearest")
    st = get_state(mn.fc1)
    scale = st.scale.view(-1, 1)
    assert st.spec.format == "int4"
    assert bool((mt.fc1.weight.abs() <= w.abs() + 1e-6).all())  # truncation shrinks
    inside = (w >= -8 * scale) & (w <= 7 * scale)  # the least-squares scale clips a few weights
    assert bool(((mn.fc1.weight - w).abs() <= scale / 2 + 1e-6)[inside].all())
    assert bool((mn.fc1.weight[~inside].abs() >= 7 * scale.expand_as(w)[~inside] - 1e-6).all())
    codes = mn.fc1.weight.detach() / scale
    torch.testing.assert_close(codes, torch.round(codes))
    assert -8 <= float(codes.round().min()) and float(codes.round().max()) <= 7  # two's complement int4


def test_neuron_state_runs_quantized_in_lif():
    torch.manual_seed(0)
    m = SpikingMLP(8, (16,), 4, T=4, init_gain=3.0)
    fmt = quantize_neurons(m, 8, "nearest", int_bits=3)
    assert fmt == state_format(8, 3, "nearest") and fmt.frac_bits == 4
    assert m.lif1.state_quant is not None and m.lif1.state_quant.bits == 8
    with torch.no_grad():
        m(torch.rand(5, 8))
    v = m.lif1.v
    torch.testing.assert_close(v * 16, torch.round(v * 16))  # on the 1/16 grid
    assert float(v.abs().max()) <= 8


def test_pareto_front_synthetic():
    recs = [{"memory_bytes": 10, "acc": 0.5, "id": "a"}, {"memory_bytes": 20, "acc": 0.7, "id": "b"},
            {"memory_bytes": 15, "acc": 0.4, "id": "c"}, {"memory_bytes": 30, "acc": 0.7, "id": "d"},
            {"memory_bytes": 25, "acc": 0.9, "id": "e"}, {"memory_bytes": 10, "acc": 0.6, "id": "f"},
            {"memory_bytes": 40, "acc": 0.85, "id": "g"}, {"memory_bytes": 20, "acc": 0.7, "id": "h"}]
    front = pareto_front(recs)
    assert [r["id"] for r in front] == ["f", "b", "e"]
    # brute-force definition: nothing in the front is dominated, everything else is
    def dominated(r):
        return any(o["memory_bytes"] <= r["memory_bytes"] and o["acc"] >= r["acc"] and
                   (o["memory_bytes"] < r["memory_bytes"] or o["acc"] > r["acc"]) for o in recs)
    assert not any(dominated(r) for r in front)
    assert all(dominated(r) or r["id"] == "h" for r in recs if r not in front)  # h duplicates b
    assert smallest_meeting(recs, 0.65)["id"] == "b"
    assert smallest_meeting(recs, 0.88)["id"] == "e"
    assert smallest_meeting(recs, 0.95) is None
    with pytest.raises(ValueError, match="records"):
        pareto_front([{"acc": 1.0}])


def test_memory_accounting():
    m = SpikingMLP(8, (16,), 4, T=2)
    fp = memory_bytes(m, QuantConfig(None, None))
    q = memory_bytes(m, QuantConfig(4, 8))
    assert fp["weight_bytes"] == 4 * (8 * 16 + 16 * 4)
    assert q["weight_bytes"] == 16 * 4 + 4 * 8  # ceil(K * 4 / 8) bytes per packed row
    assert q["state_bytes"] == 16 * 1 and fp["state_bytes"] == 16 * 4
    assert q["memory_bytes"] < fp["memory_bytes"]


def test_in_training_vs_post_training(digits):
    from sparsesnn.deploy import deploy

    model, tr, te = digits
    base = evaluate(model, te)["acc"]
    ex = explore(model, te, tr, weight_bits=(2,), state_bits=(8,), roundings=("nearest",),
                 modes=("post", "qat"), accuracy_constraint=0.0, epochs=1)
    assert [r["mode"] for r in ex.records] == ["post", "qat"]
    post, qat = ex.records
    assert post["memory_bytes"] == qat["memory_bytes"]
    # 2-bit post-training quantization hurts; one epoch of quantization-aware training recovers
    assert post["acc"] < base and qat["acc"] > post["acc"]
    # ... to a working model: floors below what digits reaches here (post 0.75, QAT 0.87, float
    # 0.86; chance 0.1), so a quantizer that wrecks the weights fails even if QAT "beats" it
    assert base >= 0.75 and post["acc"] >= 0.4 and qat["acc"] >= 0.7, (base, post["acc"], qat["acc"])
    assert ex.best is qat and ex.front == [qat]
    # the chosen model is really quantized (weights on the grid, state in fixed point) and deploys
    bm = ex.best_model
    st = get_state(bm.fc2)
    codes = bm.fc2.weight / st.scale.view(-1, 1)
    torch.testing.assert_close(codes, torch.round(codes).clamp(-2, 1))  # int2: four levels
    assert bm.lif1.state_quant is not None
    d = deploy(bm)
    x = next(iter(te))[0]
    with torch.no_grad():
        assert torch.equal(d(x).argmax(-1), bm.eval()(x).argmax(-1))


def test_in_training_quantizer_keeps_grid(digits):
    model, tr, _ = digits
    m = copy.deepcopy(model)
    q = InTrainingQuantizer(m, 4, "stochastic", seed=1)
    fit(m, tr, torch.optim.Adam(m.parameters(), 1e-3), epochs=1, hooks=[q], progress=False)
    reset_states(m)
    q.finalize()
    for layer in q.layers.values():
        st = get_state(layer)
        c = layer.weight / st.scale.view(-1, 1)
        torch.testing.assert_close(c, torch.round(c).clamp(-8, 7))  # two's complement int4


def test_explore_constraint_picks_smallest(digits):
    model, tr, te = digits
    ex = explore(model, te, tr, weight_bits=(8, 2), state_bits=(16,), roundings=("nearest", "truncate"),
                 modes=("post",), accuracy_constraint=0.5)
    base = evaluate(model, te)["acc"]
    assert all(abs(r["acc"] - base) <= 0.02 for r in ex.records if r["weight_bits"] == 8)  # lossless
    ok = [r for r in ex.records if r["acc"] >= 0.5]
    assert ex.best["acc"] >= 0.5
    assert ex.best == min(ok, key=lambda r: (r["memory_bytes"], -r["acc"]))
    assert evaluate(ex.best_model, te)["acc"] == pytest.approx(ex.best["acc"])


@pytest.mark.parametrize("bad", ["round", "floor", None, 1])
def test_bad_rounding(bad):
    m = SpikingMLP(4, (5,), 2, T=2)
    with pytest.raises(ValueError, match="^rounding: "):
        QuantConfig(4, 8, bad)
    with pytest.raises(ValueError, match="^rounding: "):
        quantize_weights(m, 4, bad)
    with pytest.raises(ValueError, match="^rounding: "):
        explore(m, [], roundings=(bad,), modes=("post",))


def test_bad_precisions_and_modes():
    m = SpikingMLP(4, (5,), 2, T=2)
    with pytest.raises(ValueError, match="weight_bits"):
        QuantConfig(3, 8)
    with pytest.raises(ValueError, match="state_bits"):
        QuantConfig(4, 3)
    with pytest.raises(ValueError, match="^mode: "):
        QuantConfig(4, 8, "nearest", "during")
    with pytest.raises(ValueError, match="accuracy_constraint"):
        explore(m, [], modes=("post",), accuracy_constraint=1.5)
    with pytest.raises(ValueError, match="train_loader"):
        apply_config(m, QuantConfig(4, 8, mode="in"))


# ---- in-training without a shadow copy, fresh noise (issue 14) ----------------------------
def _tiny_net():
    torch.manual_seed(0)
    return SpikingMLP(8, (16,), 3, T=4, init_gain=4.0)


def test_in_training_keeps_weights_on_the_grid_without_shadow():
    m = _tiny_net()
    q = InTrainingQuantizer(m, 4, "nearest", shadow=False)
    scale = get_state(m.fc1).scale.clone()
    w0 = m.fc1.weight.detach().clone()
    with torch.no_grad():  # an update of a tenth of a grid step: nearest rounding loses it
        m.fc1.weight.add_(0.1 * scale[:, None])
    q.step()
    assert torch.equal(m.fc1.weight.detach(), w0)
    assert torch.equal(get_state(m.fc1).scale, scale) and not q._latent  # no float copy
    # QAT (the old 'in'): the shadow copy accumulates it, ten such updates move the weights
    m2 = _tiny_net()
    q2 = InTrainingQuantizer(m2, 4, "nearest", shadow=True)
    w0 = m2.fc1.weight.detach().clone()
    for _ in range(10):
        with torch.no_grad():
            m2.fc1.weight.add_(0.1 * get_state(m2.fc1).scale[:, None])
        q2.step()
    assert not torch.equal(m2.fc1.weight.detach(), w0)
    # stochastic rounding keeps small updates in expectation: the mean moves by ~0.1 step
    m3 = _tiny_net()
    q3 = InTrainingQuantizer(m3, 4, "stochastic", shadow=False)
    s3 = get_state(m3.fc1).scale[:, None]
    w0 = m3.fc1.weight.detach().clone()
    with torch.no_grad():
        m3.fc1.weight.add_(0.1 * s3)
    q3.step()
    moved = ((m3.fc1.weight.detach() - w0) / s3).mean()
    assert 0.03 < float(moved) < 0.2


def test_mode_in_trains_on_the_grid(digits):
    model, tr, te = digits
    q = apply_config(model, QuantConfig(4, None, "stochastic", "in"), tr, epochs=1)
    for layer in (q.fc1, q.fc2, q.fc3):
        codes = layer.weight.detach() / get_state(layer).scale[:, None]
        assert torch.allclose(codes, codes.round(), atol=1e-4) and -8 - 1e-4 <= codes.min() and codes.max() <= 7 + 1e-4
    assert evaluate(q, te)["acc"] >= 0.6


def test_stochastic_state_noise_is_fresh_every_pass():
    m = _tiny_net()
    x = torch.rand(32, 8)
    quantize_neurons(m, 6, "stochastic", int_bits=3)
    outs = [m(x) for _ in range(3)]
    assert not torch.equal(outs[0], outs[1]) or not torch.equal(outs[1], outs[2])
    quantize_neurons(m, 6, "stochastic", int_bits=3, fresh_noise=False)  # the old fixed pattern
    assert torch.equal(m(x), m(x))


@pytest.mark.parametrize("m_bits,n_bits,fmt", [(0, 3, "int4"), (1, 5, "int8"), (0, 1, "int2"), (2, 10, None)])
def test_fixed_point_qmn_weights(m_bits, n_bits, fmt):
    from sparsesnn.compress.tinysnn import quantize_weights_fixed
    from sparsesnn.deploy import deploy, layer_formats

    m = _tiny_net()
    with torch.no_grad():
        m.fc1.weight.mul_(3.0)  # some weights beyond the Q0.n range: clamped
    quantize_weights_fixed(m, m_bits, n_bits)
    kmax = 2 ** (m_bits + n_bits) - 1
    for layer in (m.fc1, m.fc2):
        k = layer.weight.detach() * 2 ** n_bits
        assert torch.allclose(k, k.round(), atol=1e-4)
        # two's complement: the negative side reaches -2^(m+n) (saturated weights land there)
        assert float(k.max()) <= kmax + 1e-4 and float(k.min()) >= -(kmax + 1) - 1e-4
    d = deploy(m)
    formats = {f["format"] for f in layer_formats(d).values()}
    assert formats == ({fmt} if fmt else {"fp32"})
    x = torch.rand(16, 8)
    torch.testing.assert_close(d(x), m(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="frac_bits"):
        quantize_weights_fixed(m, 0, -1)


# ---- four-level 2-bit weights, deployed bytes (issue 14) ----------------------------------
def test_two_bit_weights_use_four_levels_and_deploy_exactly():
    from sparsesnn.deploy import deploy, layer_formats

    m = _tiny_net()
    quantize_weights(m, 2)
    levels = set()
    for layer in (m.fc1, m.fc2):
        st = get_state(layer)
        codes = layer.weight.detach() / st.scale.view(-1, 1)
        torch.testing.assert_close(codes, codes.round(), atol=1e-5, rtol=0)
        levels |= set(codes.round().int().unique().tolist())
    assert levels == {-2, -1, 0, 1}
    d = deploy(m)
    assert {f["format"] for f in layer_formats(d).values()} == {"int2"}
    x = (torch.rand(16, 8) > 0.5).float()
    reset_states(m)
    torch.testing.assert_close(d(x), m(x), atol=1e-4, rtol=1e-4)


def test_two_bit_least_squares_scale_beats_the_ternary_grid():
    torch.manual_seed(0)
    w = torch.randn(32, 64)
    from sparsesnn.compress.tinysnn import fit_scale
    from sparsesnn.quant import QuantSpec, dequantize, quantize

    s = fit_scale(w, 2)
    codes, _ = quantize(w, QuantSpec(2, full_range=True), scale=s)
    err4 = float((dequantize(codes, s) - w).pow(2).mean())
    c3, s3 = quantize(w, QuantSpec(2))  # the old symmetric grid: -1, 0, 1
    err3 = float((dequantize(c3, s3) - w).pow(2).mean())
    assert err4 < 0.8 * err3
    assert int((codes == -2).sum()) > 0.02 * w.numel()  # the fourth level is really used


def test_fixed_point_q01_is_the_four_level_grid():
    from sparsesnn.compress.tinysnn import quantize_weights_fixed

    m = _tiny_net()
    quantize_weights_fixed(m, 0, 1)
    vals = set(torch.cat([m.fc1.weight.flatten(), m.fc2.weight.flatten()]).tolist())
    assert vals == {-1.0, -0.5, 0.0, 0.5}


@pytest.mark.parametrize("bits", [8, 4, 2, "ternary", None])
def test_memory_bytes_are_the_deployed_bytes(bits):
    from sparsesnn.deploy import deploy

    m = _tiny_net()
    with torch.no_grad():
        m.fc1.weight[:, :6] = 0  # mostly zero: deploy may pick the pruned layout
    cfg = QuantConfig(bits, 8)
    q = copy.deepcopy(m)
    quantize_weights(q, bits)
    stored = sum(layer.model_bytes() for layer in deploy(q).modules() if hasattr(layer, "model_bytes"))
    mb = memory_bytes(m, cfg)
    assert mb["weight_bytes"] + mb["scale_bytes"] + mb["bias_bytes"] == stored
