"""metrics.noise_robustness: accuracy under Gaussian-noise-corrupted inputs."""
import pytest
import torch

from sparsesnn.metrics import noise_robustness


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 2, generator=g)
    y = (x[:, 0] > x[:, 1]).long()
    return x, y


def test_exact_classifier_degrades_with_noise():
    x, y = _data()
    scores = lambda z: torch.stack([z[:, 1], z[:, 0]], 1)  # noqa: E731  (argmax -> x0 > x1)
    r = noise_robustness(scores, x, y, sigmas=(0.0, 0.1, 1.0))
    assert r["sigmas"] == [0.0, 0.1, 1.0]
    assert r["accuracy"][0] == 1.0  # no noise: the rule is exact
    assert r["accuracy"][2] < r["accuracy"][1] <= 1.0
    assert r["accuracy"][2] < 0.8


def test_labels_output_same_seed_same_noise_and_clamp():
    x, y = _data()
    seen = []
    def labels(z):
        seen.append(z.clone())
        return (z[:, 0] > z[:, 1]).long()
    a = noise_robustness(labels, x, y, sigmas=(0.3,), seed=5)
    b = noise_robustness(labels, x, y, sigmas=(0.3,), seed=5)
    assert a == b and torch.equal(seen[0], seen[1])
    assert float(seen[0].min()) >= 0 and float(seen[0].max()) <= 1
    noise_robustness(labels, x, y, sigmas=(0.3,), seed=5, clamp=None)
    assert float(seen[-1].min()) < 0 or float(seen[-1].max()) > 1


def test_bad_arguments():
    x, y = _data()
    f = lambda z: z[:, 0]  # noqa: E731
    with pytest.raises(ValueError, match="sigmas"):
        noise_robustness(f, x, y, sigmas=(-0.1,))
    with pytest.raises(ValueError, match=r"^y: expected labels of shape"):
        noise_robustness(f, x, y[:5])
    with pytest.raises(ValueError, match=r"^x: expected a floating-point"):
        noise_robustness(f, x.long(), y)
    with pytest.raises(ValueError, match="predict"):
        noise_robustness(lambda z: z[:3, 0].long(), x, y)
    with pytest.raises(ValueError, match="clamp"):
        noise_robustness(f, x, y, clamp=(1.0, 0.0))
