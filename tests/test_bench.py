"""The benchmark command runs end to end (tiny shapes: a smoke test, not a measurement)."""

from mmarnn_min.bench.__main__ import main


def test_bench_quick_prints_every_part(capsys):
    main(["--quick", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "fallback/fused" in out and "reference/fused" in out  # routing, with the extension built
    assert "torch.nn.GRU" in out and "ratio" in out              # GRU
    assert "crops/s" in out                                      # MMA


def test_bench_measures_beside_a_busy_neighbour(capsys):
    main(["--quick", "--only", "routing", "--device", "cpu", "--busy-neighbour"])
    out = capsys.readouterr().out
    assert "beside a busy PyTorch job" in out and "fallback/fused" in out
