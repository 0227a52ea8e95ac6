"""The saturation rule on hand-made loss sequences (Gradient Dissent §2)."""

import numpy as np
import pytest

from pipeline.maths.saturation import improving, saturated, saturation_step
from tests.reference import improving_by_step, saturation_step_by_step


def test_first_step_improves_and_decreasing_curve_never_saturates():
    loss = np.array([5.0, 4.0, 3.0, 2.5])
    assert improving(loss).tolist() == [True, True, True, True]
    assert np.isnan(saturation_step(loss, np.arange(4)))


def test_rise_above_tolerance_is_saturated():
    # best earlier is 2.0; 2.01 is at the tolerance (not below it), 2.03 above it, 2.015 below
    loss = np.array([3.0, 2.0, 2.015, 2.03])
    assert improving(loss, tolerance=0.01).tolist() == [True, True, True, False]


def test_tie_with_threshold_is_saturated():
    # L_s < 1.01 · min earlier is strict: exactly at the threshold is not improving
    loss = np.array([4.0, 4.0 * 1.01, 4.0])
    assert improving(loss, tolerance=0.01).tolist() == [True, False, True]
    # an exact tie with the best earlier loss improves (within tolerance)
    assert improving(np.array([2.0, 2.0]), tolerance=0.01).tolist() == [True, True]
    # with zero tolerance a tie is not an improvement
    assert improving(np.array([2.0, 2.0]), tolerance=0.0).tolist() == [True, False]


def test_saturation_step_is_first_step_of_final_saturated_run():
    steps = np.array([0, 1, 2, 4, 8, 16])
    loss = np.array([5.0, 3.0, 3.5, 2.9, 3.2, 3.3])  # saturated at 2, improving at 4, then not
    assert saturated(loss).tolist() == [False, False, True, False, True, True]
    assert saturation_step(loss, steps) == 8.0


def test_saturated_from_the_second_step():
    steps = np.array([0, 10, 20])
    assert saturation_step(np.array([1.0, 2.0, 3.0]), steps) == 10.0


def test_axis_and_nan():
    loss = np.array([[1.0, np.nan], [2.0, 3.0], [0.5, 4.0]])  # (step, bin)
    imp = improving(loss, axis=0)
    assert imp.tolist() == [[True, False], [False, True], [True, False]]
    assert saturated(loss, axis=0).tolist() == [[False, False], [True, False], [False, True]]
    np.testing.assert_array_equal(improving(loss.T, axis=1), imp.T)


def test_saturation_step_per_bin_follows_each_curve():
    steps = np.array([0, 1, 2, 4, 8, 16])
    curves = np.array(
        [
            [5.0, 3.0, 3.5, 2.9, 3.2, 3.3],  # saturated from 8
            [5.0, 4.0, 3.0, 2.5, 2.0, 1.0],  # never
            [1.0, 2.0, 2.0, 2.0, 2.0, 2.0],  # from the second step
            [np.nan, 3.0, 2.0, 2.5, 2.6, np.nan],  # last step has no loss: never
        ]
    )
    expected = [8.0, np.nan, 1.0, np.nan]
    np.testing.assert_array_equal(saturation_step(curves.T, steps, axis=0), expected)
    np.testing.assert_array_equal(saturation_step(curves, steps, axis=1), expected)
    for curve, want in zip(curves, expected):  # the 1-D form agrees and stays a float
        got = saturation_step(curve, steps)
        assert isinstance(got, float)
        np.testing.assert_equal(got, want)


@pytest.mark.parametrize("tolerance", [0.0, 0.01, 0.1])
def test_random_curves_match_a_loop_over_steps(tolerance):
    rng = np.random.default_rng(7)
    steps = np.array([0, 1, 2, 4, 8, 16, 32, 64])
    # noisy curves drifting down, flat or up, with gaps: every branch of the rule is exercised
    drift = np.linspace(-0.1, 0.05, 200)[:, None]
    curves = 3.0 * np.exp((drift + rng.normal(0, 0.05, size=(200, steps.size))).cumsum(axis=1))
    curves[rng.random(curves.shape) < 0.1] = np.nan
    got_imp = improving(curves, axis=1, tolerance=tolerance)
    got_step = saturation_step(curves, steps, tolerance, axis=1)
    outcomes = set()
    for curve, imp, step in zip(curves, got_imp, got_step):
        assert imp.tolist() == improving_by_step(curve.tolist(), tolerance)
        want = saturation_step_by_step(curve.tolist(), steps.tolist(), tolerance)
        np.testing.assert_equal(step, want)
        outcomes.add("never" if np.isnan(want) else "first" if want == steps[1] else "later")
    assert outcomes == {"never", "first", "later"}
