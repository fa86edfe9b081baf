"""The benchmarks' own computations: the PyTorch competitor computes jgan's step, and short runs write their tables."""

import json

import pytest

from benchmarks import train_speed, unroll_k

torch = pytest.importorskip("torch")  # A dev dependency: present wherever the suite runs.


@pytest.mark.parametrize("network, k", [("metz", 0), ("metz", 1), ("metz", 3), ("mlp128", 2)])
def test_torch_step_matches_jgan(network, k):
    # An independent implementation (torch.func, nested grad through K Adam updates)
    # gives jgan's generator loss and gradient norm: the competitor computes the same step.
    assert unroll_k.check_torch(network, k) < 1e-10  # float64 on both sides


def test_unroll_k_short_run(tmp_path):
    rows = unroll_k.main(["--networks", "metz", "--ks", "2", "--variants", "scan", "loop",
                          "--repeats", "2", "--compile-repeats", "1", "--memory-ks", "3",
                          "--out", str(tmp_path)])
    table = (tmp_path / "unroll_k.md").read_text()
    assert "| metz | 2 | torch |" in table and "K=2: scan/loop" in table
    saved = json.loads((tmp_path / "unroll_k.json").read_text())
    assert {(r["k"], r["variant"]) for r in saved} == {(2, "scan"), (2, "loop"), (3, "scan"), (2, "torch")}
    assert all(r["step_ms"] > 0 for r in rows if "step_ms" in r)
    assert (tmp_path / "unroll_k.png").stat().st_size > 0


def test_train_speed_short_run(tmp_path):
    rows = train_speed.main(["--programs", "mog_k0", "--repeats", "2", "--warmup", "0", "--mog-chunk", "3",
                             "--label", "now", "--out", str(tmp_path)])
    assert [r["program"] for r in rows] == ["mog_k0"]
    saved = json.loads((tmp_path / "train_speed_now.json").read_text())
    assert saved[0]["steps_per_s"] == pytest.approx(1e3 / saved[0]["step_ms"])
    assert "| mog_k0 | now |" in (tmp_path / "train_speed_now.md").read_text()


def test_scale_out_short_run_over_two_devices(tmp_path):
    from benchmarks import scale_out

    out = tmp_path / "row.json"
    row = scale_out.main(["--devices", "2", "--chunk", "2", "--repeats", "1", "--unroll-steps", "1",
                          "--out", str(out)])
    assert (row["processes"], row["devices"], row["unroll_steps"]) == (1, 2, 1)
    assert row["steps_per_s"] == pytest.approx(1e3 / row["step_ms"])
    assert json.loads(out.read_text()) == row
