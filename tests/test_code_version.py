"""Runs record the code that made them: a sweep's report says when its runs come from different code, and
`testbed sweep --redo-older` runs those again (a run id hashes the config, not the code); a folder whose ids an
older scheme made is refused in one line rather than trained again."""

import json

from conftest import CONFIGS, cli_error, run_cli
from fake_runs import aggregate_metrics, write_manifest, write_run

from testbed.version import code_version

SWEEP = {"name": "s", "configs": [str(CONFIGS / "envs/confounded.yaml")],
         "args": {"model": "ERM", "data.n_train": 200, "data.n_val": 100, "data.n_test": 100, "trainer.max_epochs": 1,
                  "trainer.enable_checkpointing": False},
         "axes": {"model.width": [8, 16]}, "seeds": [0]}


def test_a_sweep_records_its_code_and_redoes_only_the_runs_of_other_code(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(json.dumps(SWEEP))
    run_cli("sweep", "-c", "s.yaml", "--out", "out")
    runs = sorted(p for p in (tmp_path / "out/s").iterdir() if p.is_dir())
    assert [json.loads((d / "run.json").read_text())["code"] for d in runs] == [code_version()] * 2
    assert code_version().startswith("0.")
    assert json.loads((tmp_path / "out/s/manifest.json").read_text())["ids"] == 2
    old = json.loads((runs[0] / "run.json").read_text()) | {"code": "0.0.1"}
    (runs[0] / "run.json").write_text(json.dumps(old))
    capsys.readouterr()
    run_cli("sweep", "-c", "s.yaml", "--out", "out")  # without the flag, done is done
    assert "0 ran" in capsys.readouterr().out
    run_cli("sweep", "-c", "s.yaml", "--out", "out", "--redo-older")
    out = capsys.readouterr().out
    assert "redo-older: 1 runs made by other code will run again" in out and "1 ran" in out
    assert json.loads((runs[0] / "run.json").read_text())["code"] == code_version()


def test_a_folder_of_runs_identified_by_an_older_scheme_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(json.dumps(SWEEP))
    old = tmp_path / "out/s"
    (old / "0123456789ab").mkdir(parents=True)
    (old / "0123456789ab/done").write_text("")
    manifest = json.dumps({"sweep": "s", "runs": ["0123456789ab"]})  # as testbed wrote it before id scheme 2
    (old / "manifest.json").write_text(manifest)
    err = cli_error(capsys, "sweep", "-c", "s.yaml", "--out", "out")
    assert len(err) == 1 and err[0].startswith("testbed: error: --out: ") and "id scheme 1; this one uses 2" in err[0]
    assert (old / "manifest.json").read_text() == manifest and sorted(p.name for p in old.iterdir()) == [
        "0123456789ab", "manifest.json"]
    run_cli("sweep", "-c", "s.yaml", "--out", "new", "--dry-run")  # a new folder is fine


def test_the_report_warns_when_the_runs_of_a_sweep_come_from_different_code(tmp_path):
    for width, params in ((16, 1e4), (64, 1e5)):
        for seed in range(2):
            write_run(tmp_path / "s", f"erm-{width}-{seed}", baseline="ERM", seed=seed, width=width, params=params,
                      metrics=aggregate_metrics(0.85, 0.3, 0.2))
    write_manifest(tmp_path / "s")
    first = tmp_path / "s/erm-16-0/run.json"
    first.write_text(json.dumps(json.loads(first.read_text()) | {"code": "0.1.0 git:abc1234"}))
    run_cli("report", str(tmp_path / "s"))
    verdict = (tmp_path / "s/report.md").read_text().split("## Reference check")[0]
    assert ("**Warning: the selected runs come from 2 versions of the code (1 by `0.1.0 git:abc1234`, 3 by "
            "`unrecorded`): `testbed sweep --redo-older` runs the others again with this one.**") in verdict
