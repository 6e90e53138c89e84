import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from PIL import Image

from cvae_core.atomic import append_records
from results import study as study_files
from results.report import fid_vs_params_figure
from results.run_folder import RunFolder
from results.show import main, report_folder


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


def test_a_folder_with_nothing_to_show_says_why_in_one_line(tmp_path, capsys):
    from results.run_folder import RunFolder

    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: not a run folder (python -m search.run makes one)\n"
    assert main([str(tmp_path / "tpyo")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'tpyo'}: no run folder there\n"
    RunFolder(tmp_path).mark()  # a search over presets keeps no study: nothing until it has ended
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: its search has not ended (running, or interrupted")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--out", str(tmp_path / "notes.txt")])
    assert capsys.readouterr().err == f"error: argument --out: {tmp_path}/notes.txt: it is a file, not a folder\n"


def test_out_in_a_folder_of_other_files_is_refused_and_an_earlier_report_is_written_again(scored_run_copy, tmp_path,
                                                                                             capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "samples.png").write_bytes(b"the user's own figure")
    with pytest.raises(SystemExit):
        main([str(scored_run_copy), "--out", str(mine)])
    assert capsys.readouterr().err == (f"error: argument --out: {mine}: holds other files and no report.md, and the "
                                       "report would replace any of the same names; name a new or empty folder\n")
    assert (mine / "samples.png").read_bytes() == b"the user's own figure"
    (tmp_path / "hidden").mkdir()
    (tmp_path / "hidden" / ".DS_Store").write_bytes(b"")  # the report writes no hidden file
    assert report_folder(str(tmp_path / "hidden")) == tmp_path / "hidden"
    report = tmp_path / "report"
    assert main([str(scored_run_copy), "--out", str(report)]) == 0
    assert main([str(scored_run_copy), "--out", str(report), "--top", "1"]) == 0  # its own folder: written again
    assert Image.open(report / "samples.png").size[0] > 100


def test_a_file_or_a_dead_link_where_the_report_goes_is_one_line(scored_run_copy, tmp_path, capsys):
    (scored_run_copy / "report").write_text("mine")
    assert main([str(scored_run_copy)]) == 2
    assert capsys.readouterr().err == (f"error: {scored_run_copy / 'report'} is a file, not a folder: the report "
                                       "goes there (or give --out DIR)\n")
    assert (scored_run_copy / "report").read_text() == "mine"
    (tmp_path / "dead").symlink_to(tmp_path / "nowhere")
    with pytest.raises(SystemExit):
        main([str(scored_run_copy), "--out", str(tmp_path / "dead")])
    assert capsys.readouterr().err == f"error: argument --out: {tmp_path / 'dead'}: it is a symbolic link to nothing\n"


@pytest.mark.parametrize("damaged", ["trials.parquet", "leaderboard.parquet"])
def test_a_damaged_table_is_one_line_naming_it_and_no_report_is_written(tmp_path, capsys, damaged):
    RunFolder(tmp_path).mark()
    (tmp_path / damaged).write_text("cut short")
    assert main([str(tmp_path), "--out", str(tmp_path / "report")]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {tmp_path / damaged}: does not read back as a table (ArrowInvalid: ")
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("table", ["trials.parquet", "leaderboard.parquet"])
def test_a_table_that_is_a_folder_is_one_line_naming_it_and_no_report_is_written(tmp_path, capsys, table):
    RunFolder(tmp_path).mark()
    (tmp_path / table).mkdir()  # not "no rows": pandas would read the folder as an empty table
    assert main([str(tmp_path), "--out", str(tmp_path / "report")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / table}: is a folder, not a table\n"
    assert not (tmp_path / "report").exists()


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


def small_search(tmp_path, n_trials: int, fitted_on: dict[int, int] | None = None) -> Path:
    """A run folder as a search of n_trials leaves it before its final stage: a study and trials.parquet;
    `fitted_on`: by trial, the milestone TPE was fitted on to sample it."""
    run = RunFolder(tmp_path / "runs" / "s")
    run.path.mkdir(parents=True)
    run.space_file.write_text("space: {}\n")
    study = optuna.create_study(storage=study_files.journal_storage(run), study_name=run.name)
    rows = []
    for i in range(n_trials):
        lr, latent = 10 ** (-4 + i / 4), 4 * (1 + i % 2)
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr, "latent": latent}, value=100.0 - 10 * i + latent,
            user_attrs={study_files.FITTED_ON: fitted_on[i]} if i in (fitted_on or {}) else {},
            distributions={"lr": FloatDistribution(1e-4, 1e-2, log=True), "latent": IntDistribution(4, 8)}))
        name = f"mlp_t{i}"
        run.trial(name).mkdir()
        append_records(run.scores_file(name), [{"score_epoch": e, "score": 120.0 - e - i} for e in (2, 4)])
        rows.append({"trial_id": f"t{i}", "trial_dir": str(run.trial(name)), "objective": "fid",
                     "stop_reason": "asha" if i % 2 else "max_epochs"})
    append_records(run.asha_state, [{"bracket": 0, "rung": 0, "milestone": 2, "trial": "t0", "value": -1.0}])
    pd.DataFrame(rows).to_parquet(run.trials_table)
    return run.path


def test_show_draws_the_search_and_ranks_its_settings(tmp_path, capsys):
    run_dir = small_search(tmp_path, 6)
    assert main([str(run_dir)]) == 0
    assert "no leaderboard yet" in capsys.readouterr().out
    md = (run_dir / "report" / "report.md").read_text()
    for name in ("asha.png", "search_history.png", "search_slice.png"):
        assert f"]({name})" in md and Image.open(run_dir / "report" / name).size[0] > 100
    assert "by PED-ANOVA" in md and "| `lr` |" in md and "| `latent` |" in md


def test_a_search_still_running_is_reported_from_its_study(tmp_path, capsys):
    run_dir = small_search(tmp_path, 6)
    RunFolder(run_dir).trials_table.unlink()  # written when the search ends
    assert main([str(run_dir)]) == 0
    assert "the search has not ended (no trials.parquet yet)" in capsys.readouterr().out
    md = (run_dir / "report" / "report.md").read_text()
    assert "](search_history.png)" in md and "| `lr` |" in md and "asha.png" not in md


def test_a_leaderboard_without_rows_is_said_and_the_search_is_still_reported(tmp_path, capsys):
    from results.leaderboard import write_leaderboard

    run_dir = small_search(tmp_path, 6)
    write_leaderboard(run_dir)  # as the final stage leaves it when every finalist failed
    assert main([str(run_dir)]) == 0
    assert "The leaderboard has no rows: no finalist has finished" in capsys.readouterr().out
    md = (run_dir / "report" / "report.md").read_text()
    assert "The leaderboard has no rows" in md and "](asha.png)" in md
    from results.sample import main as sample

    assert sample([str(run_dir), "--out", str(tmp_path / "x.png")]) == 2
    assert "leaderboard.parquet: The leaderboard has no rows: no finalist has finished" in capsys.readouterr().err

def test_too_few_trials_for_importances_is_one_line_and_the_rest_is_written(tmp_path):
    run_dir = small_search(tmp_path, 2)
    assert main([str(run_dir)]) == 0
    md = (run_dir / "report" / "report.md").read_text()
    assert "Importances need at least 3 trials with a score; this search has 2." in md
    assert "needs at least 4 trials that ran to their own end; this search has 1." in md
    assert (run_dir / "report" / "search_history.png").exists() and (run_dir / "report" / "asha.png").exists()


def test_the_report_says_whether_asha_milestones_rank_trials_as_their_ends_do(tmp_path):
    run_dir = small_search(tmp_path, 8)
    run = RunFolder(run_dir)
    for i in range(0, 8, 2):  # the four that ran to their end: the best at the milestone ends worst
        append_records(run.scores_file(f"mlp_t{i}"), [{"score_epoch": 2, "score": 100.0 + i},
                                                      {"score_epoch": 4, "score": 100.0 - i}])
    assert main([str(run_dir)]) == 0
    md = (run_dir / "report" / "report.md").read_text()
    assert "Among the 4 trials that ran to their own end" in md
    assert "| 2 | 4 | -1.00 |" in md  # the ASHA-stopped trials, which rank alike at 2 and 4, left out


def test_a_val_loss_search_shows_its_asha_curves_and_agreement(tmp_path):
    """A trial ranked by val_loss scores no samples (no scores.jsonl): its scores are its best
    validation loss every epoch, which is what ASHA compared."""
    run_dir = small_search(tmp_path, 8)
    run = RunFolder(run_dir)
    trials = pd.read_parquet(run.trials_table).assign(objective="val_loss", stop_reason="patience")
    trials.to_parquet(run.trials_table)
    for i in range(8):
        run.scores_file(f"mlp_t{i}").unlink()
        append_records(run.trial(f"mlp_t{i}") / "metrics.jsonl",
                       [{"epoch": e, "best_val_loss": 2000.0 - e * (1 + i)} for e in range(1, 5)])
    assert main([str(run_dir)]) == 0
    md = (run_dir / "report" / "report.md").read_text()
    assert "Among the 8 trials that ran to their own end" in md and "| 2 | 8 | 1.00 |" in md


def test_a_run_without_a_study_says_so_in_the_report(scored_run_copy):
    assert main([str(scored_run_copy)]) == 0
    md = (scored_run_copy / "report" / "report.md").read_text()
    assert f"no Optuna study in {scored_run_copy}" in md and "samples.png" in md


def test_results_show_reads_the_leaderboard_without_importing_torch():
    import subprocess
    import sys

    code = "import sys, results.show; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_a_folder_without_a_run_is_one_line_before_the_report_libraries_load(tmp_path):
    import subprocess
    import sys

    code = (f"import sys; from results.show import main; assert main([{str(tmp_path)!r}]) == 2; "
            "loaded = {'matplotlib', 'pandas', 'torch'} & set(sys.modules); assert not loaded, loaded")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"error: {tmp_path}: not a run folder (python -m search.run makes one)\n"


def test_with_many_classes_the_per_class_bars_are_sorted_and_name_the_best_and_the_worst():
    import matplotlib.pyplot as plt

    from results.report import _class_bars

    names = [f"class{i}" for i in range(100)]
    fids = [float((37 * i) % 100) for i in range(100)]  # class0 is best (0), class27 worst (99)
    fig, ax = plt.subplots()
    _class_bars(ax, names, fids, "tab:red", lower_is_better=True, title="t")
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == sorted(fids)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["class0", "class27"]
    assert "best class0 0.00, worst class27 99.00" in ax.get_title()
    fig2, few = plt.subplots()
    _class_bars(few, names[:10], fids[:10], "tab:red", lower_is_better=True, title="t")  # each class named
    assert [t.get_text() for t in few.get_xticklabels()] == names[:10]
    plt.close("all")


def test_the_report_shows_what_asha_and_tpe_decided(tmp_path):
    run_dir = small_search(tmp_path, 4, fitted_on={2: 2, 3: 2})
    run = RunFolder(run_dir)
    append_records(run.asha_state, [{"bracket": 0, "rung": 0, "milestone": 2, "trial": "t1", "value": -118.0},
                                    {"stopped": 1, "trial": "t1", "milestone": 2, "score": 118.0, "cutoff": 101.5,
                                     "compared": 1},
                                    {"stopped": 2, "trial": "t0"},  # at max_t: no milestone, not a cut
                                    {"bracket": 0, "rung": 0, "milestone": 2, "trial": "lost", "value": -150.0},
                                    {"stopped": 3, "trial": "lost", "milestone": 2, "score": 150.0, "cutoff": 101.5,
                                     "compared": 1},
                                    {"forget": "lost"}])  # a resume's Tune never held it: another trial reran it
    assert main([str(run_dir)]) == 0
    md = (run_dir / "report" / "report.md").read_text()
    assert "| 2 | 2 | 1 |" in md  # two trials scored at epoch 2, one stopped there
    assert "| mlp_t1 | 2 | 118 | 101.5 | 1 |" in md and "| mlp_t0 |" not in md
    assert "| at random | 2 |" in md and "| from epoch-2 scores | 2 |" in md


def test_the_report_shows_the_trials_asha_let_on_where_a_milestone_was_not_trusted(tmp_path):
    run_dir = small_search(tmp_path, 4)
    run = RunFolder(run_dir)
    append_records(run.asha_state, [{"bracket": 0, "rung": 0, "milestone": 2, "trial": "t1", "value": -118.0},
                                    {"let_on": "t1", "milestone": 2, "agreement": None, "finished": 1},
                                    {"trial": "t0", "final": 90.0},
                                    {"bracket": 0, "rung": 0, "milestone": 2, "trial": "t2", "value": -130.0},
                                    {"let_on": "t2", "milestone": 2, "agreement": -0.4, "finished": 3}])
    assert main([str(run_dir)]) == 0
    md = (run_dir / "report" / "report.md").read_text()
    assert "| 2 | 3 | 0 | 2 (the last: Spearman -0.40 over 3 ended trials) |" in md
    assert "Each stop" not in md and "run_to_end_every" not in md  # no trial was cut, none ran to the end so


def test_the_report_counts_the_trials_let_on_to_run_to_the_end(tmp_path):
    run_dir = small_search(tmp_path, 4)
    append_records(RunFolder(run_dir).asha_state, [
        {"bracket": 0, "rung": 0, "milestone": 2, "trial": "t1", "value": -118.0},
        {"let_on": "t1", "milestone": 2, "runs_to_end": True, "agreement": None, "finished": 1}])
    assert main([str(run_dir)]) == 0
    md = (run_dir / "report" / "report.md").read_text()
    assert "| epoch | trials scored there | stopped there | let on, running to the end |" in md
    assert "| 2 | 2 | 0 | 1 |" in md and "`asha.run_to_end_every`" in md and "min_agreement" not in md


def test_the_report_counts_the_trials_sampled_from_last_scores(tmp_path):
    """spaces/cnn.yaml's GP is told each trial's last score; the report says how many it sampled so."""
    run_dir = small_search(tmp_path, 5, fitted_on={3: study_files.FITTED_ON_LAST, 4: study_files.FITTED_ON_LAST})
    assert main([str(run_dir)]) == 0
    md = (run_dir / "report" / "report.md").read_text()
    assert "| at random | 3 |\n| from last scores | 2 |" in md


def test_a_run_in_a_bucket_is_named_by_its_uri_in_the_report(tmp_path, monkeypatch):
    # The report lands in the bucket; a command it names must reach the run there, not this node's copy.
    monkeypatch.setenv("CVAE_SCRATCH", str(tmp_path / "scratch"))
    bucket = shutil.copytree(small_search(tmp_path, 4), tmp_path / "bucket" / "s")
    uri = f"file://{bucket}"
    assert main([uri]) == 0
    md = (bucket / "report" / "report.md").read_text()
    assert f"No leaderboard yet: run `python -m search.final {uri}`" in md and str(tmp_path / "scratch") not in md
