"""The faces benchmark runs end to end (a few frames: a smoke test, not a measurement)."""

import pytest

from mmarnn_min.bench import faces


def test_the_faces_benchmark_reports_every_part_and_end_to_end():
    pytest.importorskip("matplotlib")
    report = faces.run(frames=6, part_frames=3, repeat=1, detectors=("haar",))
    for part in ("decode", "detect haar at 320 px", "detect haar at full px", "align", "MMA", "MRNN",
                 "end to end, haar (median of 1)", "end to end, haar (best of 1)"):
        assert part in report, report
    assert "load average" in report
