"""The new-to-old space bridge against scipy's orthogonal Procrustes and numpy's normal equations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes

from rayprism.platform.bridge import bridge_quality, fit_bridge


def normalised(vectors):
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def spaces():
    """An old space, and a new one that is a rotation of it plus noise."""
    rng = np.random.default_rng(0)
    old = normalised(rng.normal(size=(400, 32)))
    rotation = np.linalg.qr(rng.normal(size=(32, 32)))[0]
    new = normalised(old @ rotation.T + 0.02 * rng.normal(size=(400, 32)))
    return new, old


def test_procrustes_matches_scipy(spaces):
    new, old = spaces
    expected, _ = orthogonal_procrustes(new, old)
    assert np.allclose(fit_bridge(new, old, "procrustes").matrix, expected, atol=1e-8)


def test_lstsq_solves_the_normal_equations(spaces):
    new, old = spaces
    matrix = fit_bridge(new, old, "lstsq").matrix
    assert np.allclose(new.T @ new @ matrix, new.T @ old, atol=1e-8)


def test_quality_is_high_for_a_rotated_space_and_low_for_an_unrelated_one(spaces):
    new, old = spaces
    bridge = fit_bridge(new[:300], old[:300])
    good = bridge_quality(bridge, new[300:], old[300:], old)
    unrelated = normalised(np.random.default_rng(1).normal(size=new.shape))
    bad = bridge_quality(fit_bridge(unrelated[:300], old[:300]), unrelated[300:], old[300:], old)
    assert good.mean_cosine > 0.99 and good.top10_agreement > 0.8
    assert bad.mean_cosine < 0.5 and bad.top10_agreement < 0.2


def test_unequal_dimensions_give_a_semi_orthogonal_map(spaces):
    new, old = spaces
    wider = np.hstack([new, np.zeros((len(new), 16))])  # a 48-dimensional "new model"
    matrix = fit_bridge(wider, old).matrix
    assert matrix.shape == (48, 32) and np.allclose(matrix.T @ matrix, np.eye(32), atol=1e-8)
