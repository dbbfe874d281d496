"""sparsesnn.encode: seeded rate codes, latency and delta codes."""
import pytest
import torch

from sparsesnn import encode


def test_bernoulli_seeded_and_rate():
    x = torch.rand(64, 50)
    a = encode.bernoulli(x, 400, seed=3)
    state = torch.get_rng_state()
    assert torch.equal(a, encode.rate(x, 400, seed=3))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not consumed
    assert not torch.equal(a, encode.bernoulli(x, 400, seed=4))
    assert a.shape == (400, 64, 50) and set(a.unique().tolist()) <= {0.0, 1.0}
    # empirical rate = x within 4 standard errors
    err = (a.mean(0) - x).abs().max()
    assert err < 4 * (0.25 / 400) ** 0.5


def test_poisson_probability():
    x = torch.full((20000,), 0.5)
    s = encode.poisson(x, 4, dt=1e-3, max_rate=200.0, seed=0)
    expected = 1 - torch.exp(torch.tensor(-0.5 * 200.0 * 1e-3))
    assert abs(s.mean().item() - expected.item()) < 0.01


def test_latency_linear_one_spike_at_expected_step():
    x = torch.tensor([[1.0, 0.5, 0.0, 0.26]])
    s = encode.latency(x, 5)
    assert s.shape == (5, 1, 4)
    assert s.sum(0).tolist() == [[1.0, 1.0, 0.0, 1.0]]  # x <= threshold (0) never fires
    assert s[:, 0].argmax(0).tolist()[:2] == [0, 2] and s[3, 0, 3] == 1  # round((1-x)*(T-1))


def test_latency_log_order():
    x = torch.tensor([0.9, 0.6, 0.3])
    s = encode.latency(x, 10, linear=False, threshold=0.2)
    t = s.argmax(0)
    assert s.sum().item() == 3 and t[0] < t[1] < t[2]


def test_delta():
    x = torch.tensor([0.0, 0.5, 0.5, 0.2, 0.9]).reshape(5, 1)
    on = encode.delta(x, threshold=0.25)
    assert on.flatten().tolist() == [0, 1, 0, 0, 1]
    both = encode.delta(x, threshold=0.25, off_spikes=True)
    assert both.flatten().tolist() == [0, 1, 0, -1, 1]
    x2 = torch.full((3, 1), 0.8)
    assert encode.delta(x2, threshold=0.5).flatten().tolist() == [1, 0, 0]
    assert encode.delta(x2, threshold=0.5, padding=True).flatten().tolist() == [0, 0, 0]


@pytest.mark.parametrize("call,match", [
    (lambda: encode.rate(torch.rand(3), 0), "T: expected an integer >= 1"),
    (lambda: encode.rate(torch.tensor([1.5]), 2), r"x: expected values in \[0, 1\]"),
    (lambda: encode.rate(torch.tensor([1]), 2), "x: expected a floating-point"),
    (lambda: encode.delta(torch.rand(3, 2), threshold=0), "threshold: expected > 0"),
    (lambda: encode.poisson(torch.rand(3), 2, dt=0), "dt, max_rate"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
