"""A published table (`results.csv` without its run folders, as `results/study/` holds it) gives the report of its
runs: `testbed report DIR --out OUT` reads the table alone."""

import pytest
from conftest import cli_error, run_cli
from test_online_report import write_sweep

from testbed.analysis import fits


def sections(report: str) -> dict[str, str]:
    parts = ("\n" + report).split("\n## ")[1:]
    return {part.split("\n", 1)[0]: part for part in parts}


def test_the_report_of_a_published_results_csv_is_the_report_of_its_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fits, "BOOTSTRAP", 200)  # the same draws in both reports: fewer of them change nothing here
    sweep = tmp_path / "runs/online"
    write_sweep(sweep)
    run_cli("report", str(sweep))
    published = tmp_path / "results/online"
    published.mkdir(parents=True)
    (published / "results.csv").write_bytes((sweep / "results.csv").read_bytes())

    err = cli_error(capsys, "report", str(published))  # it would write over the published report
    assert err == [f"testbed: error: sweep_dir: {str(published)!r} holds a published results.csv and no run "
                   "folders; give --out DIR to write its report there instead of over the published one"]
    assert sorted(p.name for p in published.iterdir()) == ["results.csv"]

    run_cli("report", str(published), "--out", str(tmp_path / "again"))
    ours, again = ((d / "report.md").read_text() for d in (sweep, tmp_path / "again"))
    verdict, online = (sections(ours)[title] for title in ("Verdict", "Online training"))
    assert "| confounded | Online(fraction=1) | **closes** |" in verdict
    assert "| confounded | ContinualFinetune | **does not close** |" in verdict
    assert "**13 verdicts rest on intervals" in verdict  # the online and continual ones among them
    assert "**Online(fraction=1): interventions to target vs parameters: larger models need fewer" in online
    assert "**confounded: reliance on the new attribute vs parameters: does not close**" in online
    assert again == ours  # the curves travel in results.csv: nothing is the run folders' alone
    assert (tmp_path / "again/fits.csv").read_text() == (sweep / "fits.csv").read_text()
    assert (tmp_path / "again/selected.csv").read_text() == (sweep / "selected.csv").read_text()


@pytest.mark.parametrize("files", [[], ["report.md"]])
def test_out_needs_the_table(tmp_path, capsys, files):
    (tmp_path / "pub").mkdir()
    for name in files:
        (tmp_path / "pub" / name).write_text("")
    err = cli_error(capsys, "report", str(tmp_path / "pub"), "--out", str(tmp_path / "out"))
    assert err == [f"testbed: error: sweep_dir: {str(tmp_path / 'pub')!r} has no results.csv for --out to report from"]
    assert not (tmp_path / "out").exists()


def test_a_published_table_reads_back_as_written(tmp_path):
    """Run ids are hex: one of digits only ("012345678901", about 1 in 280 ids) must stay text, and an empty stage
    stays empty, or the selected runs no longer match their rows."""
    import pandas as pd

    from testbed.analysis.collect import read_table, save_table

    table = pd.DataFrame({"run": ["012345678901", "0a1b2c3d4e5f"], "sweep_stage": ["", "erm"], "hparams": ["{}", "{}"],
                          "baseline": ["ERM", "ERM"], "seed": [0, 1], "metric": ["acc", "acc"], "value": [0.5, 0.25]})
    pd.testing.assert_frame_equal(read_table(save_table(table, tmp_path)), table)


def test_a_runs_records_are_written_once_and_read_back_on_each_of_its_rows(tmp_path):
    """A run's curves can be long: results.csv holds them on the run's first row only, and reading it gives
    them to every row again, as the run folders do."""
    import pandas as pd

    from testbed.analysis.collect import read_table, save_table

    curve = '{"online": [{"samples": 10, "shifted_acc": 0.5}]}'
    table = pd.DataFrame({"run": ["a1", "a1", "a1", "b2"], "records": [curve, curve, curve, "{}"],
                          "metric": ["acc", "acc_wg", "ece", "acc"], "value": [0.5, 0.25, 0.1, 0.75]})
    path = save_table(table, tmp_path)
    assert path.read_text().count("shifted_acc") == 1
    pd.testing.assert_frame_equal(read_table(path), table)
