import matplotlib.pyplot as plt
import pandas as pd
import pytest
from PIL import Image

from results.show import fid_vs_params_figure, main


def test_show_prints_the_top_rows_and_writes_the_report(scored_run_copy, capsys):
    scored_run = scored_run_copy
    assert main([str(scored_run), "--top", "2"]) == 0
    out = capsys.readouterr().out
    board = pd.read_parquet(scored_run / "leaderboard.parquet")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["trial_id", "seed", "sampler"]
    assert lines[1].split()[0] == board["trial_id"].iloc[0] and len(lines) == 2 + 2  # header, 2 rows, report path
    report = scored_run / "report"
    md = (report / "report.md").read_text()
    assert board["trial_id"].iloc[0] in md
    for name in ("samples.png", "per_class.png", "precision_recall.png", "fid_vs_params.png", "val_loss.png"):
        assert f"]({name})" in md
        assert Image.open(report / name).size[0] > 100


def test_show_without_a_leaderboard_says_what_to_run(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no leaderboard yet; run python -m search.final" in capsys.readouterr().err


# a log axis labelled these narrow ranges' minor ticks on top of each other
@pytest.mark.parametrize("params", [[100_000, 120_000], [203_000, 215_000, 243_000], [152_000, 260_000],
                                    [9_000, 95_000, 1_200_000, 30_000_000], [200_000, 200_000]])
def test_fid_vs_params_tick_labels_never_overlap(params):
    board = pd.DataFrame({"params": params, "fid": range(len(params)), "sampler": "prior"})
    fig = fid_vs_params_figure(board)
    fig.canvas.draw()
    ax = fig.axes[0]
    x0, x1 = ax.get_xlim()
    labels = [t for t in ax.get_xticklabels(which="both") if t.get_text() and x0 <= t.get_position()[0] <= x1]
    assert len(labels) >= 2
    boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in labels]
    plt.close(fig)
