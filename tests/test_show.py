import pandas as pd
from PIL import Image

from results.show import main


def test_show_prints_the_top_rows_and_writes_the_report(scored_run, capsys):
    assert main([str(scored_run), "--top", "2"]) == 0
    out = capsys.readouterr().out
    board = pd.read_parquet(scored_run / "leaderboard.parquet")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["trial_id", "seed", "sampler"]
    assert lines[1].split()[0] == board["trial_id"].iloc[0] and len(lines) == 2 + 2  # header, 2 rows, report path
    report = scored_run / "report"
    md = (report / "report.md").read_text()
    assert board["trial_id"].iloc[0] in md
    for name in ("samples.png", "fid_vs_params.png", "val_loss.png"):
        assert f"]({name})" in md
        assert Image.open(report / name).size[0] > 100


def test_show_without_a_leaderboard_says_what_to_run(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no leaderboard yet; run python -m search.final" in capsys.readouterr().err
