"""The ablation driver: trains, evaluates, aggregates, and skips finished runs when re-run."""

from __future__ import annotations

from robustseg_core.training.ablation import main as ablation


def test_ablation_runs_skips_and_tabulates(mini_dataset, tmp_path, capsys):
    tiny = ["data.crop_size=64", "data.eval_size=64", "data.batch_size=2", "data.eval_batch_size=4", "data.workers=0",
            "model.embed_dim=32", "train.epochs=1", "train.device=cpu", "train.tensorboard=false",
            "train.log_grad_norms=false", "distill.rrm_samples=2"]
    argv = ["--out", str(tmp_path), "--data-root", str(mini_dataset), "--seeds", "0", "1", "--methods", "teacher", "S",
            "--set", *tiny]
    results = ablation(argv)
    assert [len(runs) for runs in results.values()] == [2, 2]
    table = (tmp_path / "ablation.md").read_text()
    assert "| teacher | 2 |" in table and "| S | 2 |" in table and "±" in table
    assert (tmp_path / "S_seed1" / "eval_test.json").exists()
    capsys.readouterr()
    again = ablation(argv)
    assert "epoch 0" not in capsys.readouterr().out  # nothing retrained
    assert again == results
