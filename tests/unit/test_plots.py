"""The plots users look at name only what they draw, and show a regression's error rather than an empty accuracy."""

from __future__ import annotations

from flcli import plots


def legends(status, monkeypatch, tmp_path) -> list[list[str]]:
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
    plots.plot_history(status, tmp_path / "p.png")
    return [[t.get_text() for t in ax.get_legend().get_texts()] for ax in figures[0].axes]


def entry(rnd, **metrics):
    return {"round": rnd, "metrics": {"train_loss": 0.5, **metrics}}


def test_legends_name_only_the_lines_drawn(monkeypatch, tmp_path):
    plain = {"job_id": "j", "history": [entry(1, eval_accuracy=0.5), entry(2, eval_accuracy=0.9)]}
    assert legends(plain, monkeypatch, tmp_path) == [["federated accuracy of the model received"], ["training loss"]]
    busy = {
        **plain,
        "history": [entry(1, eval_accuracy=0.5), {**entry(2, eval_accuracy=0.9), "rules": [{"rule": 0}]}],
        "changes": [{"round": 2, "set": {"lr": 0.1}}],
    }
    left, right = legends(busy, monkeypatch, tmp_path)
    assert left == ["federated accuracy of the model received", "a rule fired"]
    assert right == ["training loss", "settings changed"]


def test_a_regression_plots_its_error(monkeypatch, tmp_path):
    status = {"job_id": "j", "history": [entry(1, eval_rmse=0.3), entry(2, eval_rmse=0.1)]}
    assert legends(status, monkeypatch, tmp_path)[0] == ["federated RMSE of the model received (trained scale)"]
