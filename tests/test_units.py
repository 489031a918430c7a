"""One unit convention: fractions in files, percent (two decimals) and points for people."""

import pytest

from voxadapt import units
from voxadapt.report import format_metrics_summary


@pytest.mark.parametrize(
    ("function", "value", "expected"),
    [
        (units.percent, 0.236167, "23.62%"),
        (units.percent, 0.0, "0.00%"),
        (units.percent, 1.5, "150.00%"),  # more insertions than reference characters
        (units.percent, None, "n/a"),
        (units.points, -0.0125, "-1.25 points"),
        (units.points, 0.2, "+20.00 points"),
        (units.points, None, "n/a"),
        (units.points_interval, (-0.021, -0.004), "[-2.10, -0.40] points"),
        (units.points_interval, None, "n/a"),
        (units.percent_interval, [0.2104, 0.259], "[21.04%, 25.90%]"),
        (units.p_value, 0.0, "p<0.001"),
        (units.p_value, 0.0009, "p<0.001"),
        (units.p_value, 0.001, "p=0.001"),
        (units.p_value, 0.0344, "p=0.034"),
        (units.p_value, None, "p n/a"),
    ],
)
def test_units_table(function, value, expected):
    assert function(value) == expected


def test_printed_metrics_use_percent_points_and_p_bound():
    metrics = {
        "utterances": 10,
        "reference_characters": 120,
        "cer": 0.236167,
        "cer_ci95": [0.2, 0.27],
        "compare": {
            "this": 0.236167,
            "other": 0.30,
            "delta": -0.063833,
            "ci": [-0.09, -0.03],
            "p_value": 0.0,
            "utterances": 10,
        },
    }
    text = format_metrics_summary(metrics)
    assert "23.62%" in text and "[20.00%, 27.00%]" in text
    assert "-6.38 points, 95% CI [-9.00, -3.00] points, p<0.001" in text
    assert "0.2362" not in text and "p=0.000" not in text
