"""Selection of one hyperparameter draw per scale point, the convergence flags and the reference check, on
synthetic run folders read by the real `testbed collect` and `testbed report`."""

import pandas as pd
import pytest
from conftest import cli_error, run_cli
from fake_runs import aggregate_metrics, write_manifest, write_run

from testbed.analysis import fits

LRS = {0: 1e-5, 1: 1e-3}  # draw 0 cannot learn in the budget, draw 1 can


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(fits, "BOOTSTRAP", 200)
    monkeypatch.setattr("testbed.analysis.plots.plot_sweep", lambda sweep_dir, runs: [])  # figures: test_report.py


def with_val(metrics: dict[str, float]) -> dict[str, float]:
    """Validation metrics equal to the test metrics (held-out samples of the same environments)."""
    return metrics | {f"val/{k[5:]}": v for k, v in metrics.items() if k.count("/") == 1} | \
        {"val/acc_wg_id": metrics["test/acc_id"] - 0.05}


def lr_sweep(root, oracle_acc: float = 0.74, converged: bool = True):
    """ERM and Oracle at two widths x two learning-rate draws x three seeds; the ceiling is 0.75."""
    for width, params in ((16, 1e4), (64, 1e5)):
        for draw, lr in LRS.items():
            for seed in range(3):
                learns = draw == 1
                erm = aggregate_metrics(0.85, 0.3, 0.2, 0.95) if learns else aggregate_metrics(0.5, 0.5, 0.4, 0.0)
                ref = aggregate_metrics(oracle_acc, oracle_acc - 0.01, oracle_acc - 0.03, 0.02) if learns else \
                    aggregate_metrics(0.5, 0.5, 0.45, 0.0)
                for baseline, metrics in (("ERM", erm), ("Oracle", ref)):
                    write_run(root, f"{baseline}-{width}-{draw}-{seed}", baseline=baseline, seed=seed, width=width,
                              params=params, metrics=with_val(metrics), draw=draw, hparams={"model.lr": lr},
                              converged=converged if baseline == "Oracle" else True, ceiling=0.75)
    write_manifest(root)


def test_id_val_selects_the_learning_draw_at_both_widths(tmp_path):
    lr_sweep(tmp_path / "lr")
    run_cli("report", str(tmp_path / "lr"))  # id_val is the default when there are draws
    chosen = pd.read_csv(tmp_path / "lr/selected.csv")
    assert set(chosen["rule"]) == {"id_val"} and len(chosen) == 4  # 2 baselines x 2 widths
    assert (chosen["draw"] == 1).all() and chosen["hparams"].str.contains("0.001").all()
    report = (tmp_path / "lr/report.md").read_text()
    assert report.startswith("## Verdict\n\n**Selection: `id_val` (by `val/acc_id`, per point): training-domain")
    assert "| confounded | ERM | 16 | 1 | 0.850 | 2 | model.lr=0.001 |" in report
    assert "Warning" not in report.split("## Reference check")[0]


def test_oracle_selection_is_labelled_test_domain(tmp_path):
    lr_sweep(tmp_path / "lr")
    run_cli("report", str(tmp_path / "lr"), "--select", "oracle")
    # ERM's draw 0 (it cannot learn, so it scores 0.5 on the reversed environment) beats its draw 1 (the colour:
    # 0.3) on the shifted environments, while id_val picks draw 1 (0.85 ID): the two rules part for ERM and agree
    # for the Oracle, whose learning draw is best on both.
    chosen = pd.read_csv(tmp_path / "lr/selected.csv")
    assert set(chosen["rule"]) == {"oracle"} and len(chosen) == 4
    assert chosen.groupby("baseline")["draw"].apply(set).to_dict() == {"ERM": {0}, "Oracle": {1}}
    report = (tmp_path / "lr/report.md").read_text()
    assert "TEST-DOMAIN SELECTION, an upper bound" in report.split("## Verdict")[1].split("\n## ")[0]
    assert "TEST-DOMAIN SELECTION" in report.split("## Selected hyperparameters")[1]


def test_without_selection_the_curve_goes_through_the_bad_draw(tmp_path):
    lr_sweep(tmp_path / "lr")
    run_cli("report", str(tmp_path / "lr"), "--select", "none")
    assert (pd.read_csv(tmp_path / "lr/selected.csv")["draw"] == 0).all()
    table = (tmp_path / "lr/report.md").read_text().split("## Endpoints at each model size")[1]
    assert "| confounded | ERM | 10,000 | 0.500 |" in table and "| confounded | ERM | 100,000 | 0.500 |" in table


def test_an_undertrained_oracle_puts_a_warning_in_the_headline(tmp_path):
    lr_sweep(tmp_path / "lr", oracle_acc=0.6, converged=False)
    run_cli("report", str(tmp_path / "lr"))
    report = (tmp_path / "lr/report.md").read_text()
    verdict = report.split("## Verdict")[1].split("\n## ")[0]
    assert ("**Warning: the reference (Oracle) is undertrained at the largest scale point (confounded: 0.79 of the "
            "ceiling, 3 of 3 runs unconverged)") in verdict
    assert "did not converge by their criterion" in verdict
    check = report.split("## Reference check")[1].split("\n## ")[0]
    assert "| 0.600 | 0.590 | 0.750 | 0.79 **below 95%** | 3 of 3 |" in check
    assert "train loss plateau" in report.split("## Undertrained runs")[1].split("\n## ")[0]


def test_collect_reads_old_runs_and_skips_an_unreadable_one(tmp_path, capsys):
    sweep = tmp_path / "old"
    for width, params in ((16, 1e4), (64, 1e5)):
        for seed in range(2):  # no draw, hparams, convergence or ceiling: runs from before they existed
            write_run(sweep, f"erm-{width}-{seed}", baseline="ERM", seed=seed, width=width, params=params,
                      metrics=aggregate_metrics(0.85, 0.3, 0.2))
    (sweep / "erm-64-1/results.json").write_text("{not json")
    run_cli("collect", str(sweep))
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("skipped")] == \
        [f"skipped {sweep / 'erm-64-1'}: results.json or run.json unreadable "
         "(JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"]
    assert "selection: `none`" in out[1]
    assert pd.read_csv(sweep / "results.csv")["run"].nunique() == 3
    (sweep / "results.csv").unlink()
    assert cli_error(capsys, "collect", str(sweep), "--select", "val_wg") == [
        "testbed: error: select: 'val_wg' needs the validation metric val/acc_wg_id, which these runs do not "
        "record; choose one of id_val, oracle, none"]
    assert cli_error(capsys, "report", str(sweep), "--reference", "Nope") == [
        "testbed: error: reference: 'Nope' is not a baseline of this sweep; choose one of ERM"]
    assert not (sweep / "results.csv").exists()  # a bad option writes nothing


def test_plot_draws_the_selected_runs(tmp_path, monkeypatch, capsys):
    lr_sweep(tmp_path / "lr")
    drawn = []
    monkeypatch.setattr("testbed.analysis.plots.plot_sweep", lambda sweep_dir, runs: drawn.append(runs) or [])
    run_cli("plot", str(tmp_path / "lr"))
    run_cli("plot", str(tmp_path / "lr"), "--select", "none")
    assert [set(runs["draw"]) for runs in drawn] == [{1}, {0}] and [len(runs) for runs in drawn] == [12, 12]
    assert "selection: `none`" in capsys.readouterr().out


def test_one_class_reads_a_constant_predictor_from_the_group_accuracies():
    from testbed.analysis.collect import one_class

    def res(groups, **recorded):
        return {"metrics": aggregate_metrics(0.6, 0.5, 0.0, groups=groups), **recorded}

    assert one_class(res({0: 1.0, 1: 1.0, 2: 0.0, 3: 0.0})) == 0  # g = y * 2 + a: groups 0, 1 are class 0
    assert one_class(res({0: 0.0, 1: 0.005, 2: 0.995, 3: 1.0})) == 1
    assert one_class(res({0: 1.0, 1: 0.97, 2: 0.0, 3: 0.0})) is None  # predicts class 1 for 3% of group 1
    assert one_class(res({0: 0.9, 1: 0.3, 2: 0.3, 3: 0.9})) is None  # follows the attribute
    # Four attribute values (groups 0-3 are class 0): one class everywhere; with the default layout (n_attr =
    # n_classes = 2 would make groups 2 and 3 class 1) the same accuracies are not one class's.
    four = {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 0.0, 5: 0.0, 6: 0.0, 7: 0.0}
    assert one_class(res(four, n_classes=2, n_attr=4)) == 0
    assert one_class(res(four)) is None  # 8 groups fit no default square layout: not checked
    assert one_class({"metrics": aggregate_metrics(0.6, 0.5, 0.0)}) is None  # no group accuracies


def test_a_degenerate_run_is_reported_and_left_out_of_the_points(tmp_path):
    """One Oracle seed collapsed to a constant predictor (ID 0.594, reliance 0, worst group 0) and its plateau
    says converged: the report names it, and the Oracle's point at that width is the mean of the other seeds."""
    sweep = tmp_path / "collapse"
    for width, params in ((2, 76), (8, 818), (32, 20866)):
        for seed in range(3):
            bad = width == 2 and seed == 0
            ref = aggregate_metrics(0.594, 0.5, 0.0, 0.0, groups={0: 1.0, 1: 1.0, 2: 0.0, 3: 0.0}) if bad else \
                aggregate_metrics(0.75, 0.74, 0.7, 0.02, groups={0: 0.75, 1: 0.74, 2: 0.75, 3: 0.72})
            erm = aggregate_metrics(0.85, 0.3, 0.2, 0.95, groups={0: 0.95, 1: 0.2, 2: 0.25, 3: 0.95})
            for baseline, metrics in (("Oracle", ref), ("ERM", erm)):
                write_run(sweep, f"{baseline}-{width}-{seed}", baseline=baseline, seed=seed, width=width,
                          params=params, metrics=metrics, converged=True, ceiling=0.75, n_attr=2)
    write_manifest(sweep)
    run_cli("report", str(sweep))
    report = (sweep / "report.md").read_text()
    verdict = report.split("## Verdict")[1].split("\n## ")[0]
    assert "17 selected runs (of the sweep file as last run, 1 degenerate left out)" in verdict
    assert ("**Warning: 1 of 18 selected runs is degenerate: it predicts one class on every test group (ID "
            "accuracy at that class's prior, reliance 0); 1 of them is recorded as converged") in verdict
    assert "| confounded | Oracle | 76 | 1,000 | 0 | 0 | 0.594 | yes |" in report.split("## Degenerate runs")[1]
    points = report.split("## Endpoints at each model size")[1].split("\n## ")[0]
    assert "| confounded | Oracle | 76 | 0.750 | 0.740 | 0.700 |" in points  # not (0.594 + 2 * 0.75) / 3
    assert "| confounded | ERM | 76 | 0.850 | 0.300 | 0.200 |" in points


def braking_metrics(demos: dict[int, float], closed_loop: dict[int, float]) -> dict[str, float]:
    """A Braking run's group accuracies (g = action * 2 + light): on the demonstrations (train, id) and on the
    closed loop, where a policy visits only some groups."""
    out = aggregate_metrics(0.667, 0.5, 0.0, 0.0)
    for env in ("train:corr=0.91", "id:corr=0.91"):
        out |= {f"test/{env}/acc_g{g}": acc for g, acc in demos.items()}
    return out | {f"test/ood:closed_loop/acc_g{g}": acc for g, acc in closed_loop.items()}


def test_one_class_on_control_runs_reads_the_demonstrations_and_the_closed_loop():
    """The report's control sweep of one gradient step (each policy always brakes or never does, as the
    unflagged test trained them) is one class; a light-copying policy that never brakes in its own closed loop
    but predicts both actions on the demonstrations is not; a policy that learnt the distance is not."""
    from testbed.analysis.collect import one_class

    def res(demos, closed_loop):
        return {"metrics": braking_metrics(demos, closed_loop), "n_classes": 2, "n_attr": 2}

    assert one_class(res({0: 1.0, 1: 1.0, 2: 0.0, 3: 0.0}, {0: 1.0, 2: 0.0})) == 0  # never brakes
    assert one_class(res({0: 0.0, 1: 0.0, 2: 1.0, 3: 1.0}, {0: 0.0, 1: 0.0})) == 1  # always brakes
    assert one_class(res({0: 1.0, 1: 0.0, 2: 0.0, 3: 1.0}, {0: 1.0, 2: 0.0})) is None  # copies the light
    assert one_class(res({0: 0.56, 1: 0.77, 2: 1.0, 3: 0.98}, {0: 0.71, 1: 0.35, 2: 0.8, 3: 0.96})) is None


def test_a_sweep_of_degenerate_runs_only_is_reported_as_such(tmp_path, capsys):
    """Every run of this control sweep predicts one action (one gradient step, as the report test's tiny braking
    sweep once trained): the report says so and lists them, and fits nothing, rather than failing on an empty
    selection."""
    sweep = tmp_path / "drive"
    for width, params in ((8, 114), (16, 354)):
        for seed in range(2):
            never = {0: 1.0, 1: 1.0, 2: 0.0, 3: 0.0}, {0: 1.0, 2: 0.0}
            always = {0: 0.0, 1: 0.0, 2: 1.0, 3: 1.0}, {0: 0.0, 1: 0.0}
            for baseline in ("ERM", "Oracle"):
                write_run(sweep, f"{baseline}-{width}-{seed}", baseline=baseline, seed=seed, width=width,
                          params=params, metrics=braking_metrics(*(always if seed else never)), converged=False,
                          regime="braking", n_attr=2)
    write_manifest(sweep)
    run_cli("report", str(sweep))
    report = (sweep / "report.md").read_text()
    verdict = report.split("## Verdict")[1].split("\n## ")[0]
    assert "all 8 selected runs (of the sweep file as last run) are degenerate" in verdict
    table = report.split("## Degenerate runs")[1].split("\n## ")[0]
    assert "| braking | ERM | 114 | 1,000 | 0 | 0 | 0.667 | no |" in table
    assert "| braking | Oracle | 354 | 1,000 | 1 | 1 | 0.667 | no |" in table
    assert pd.read_csv(sweep / "fits.csv").empty and (sweep / "selected.csv").exists()
    run_cli("plot", str(sweep))
    assert "figures: none: all 8 selected runs predict one class" in capsys.readouterr().out


def test_per_seed_selection_chooses_within_each_seed_as_domainbed(tmp_path, capsys):
    """Validation scores by draw and seed: draw 1 has the better mean (0.817 against 0.767) but only seed 0 scores it
    higher. Per point every seed takes draw 1; per seed (DomainBed's protocol) seed 0 takes draw 1 and seeds 1 and 2
    draw 0, and the report says that the selection's noise enters the spread."""
    val = {0: [0.70, 0.80, 0.80], 1: [0.95, 0.75, 0.75]}
    for width, params in ((16, 1e4), (64, 1e5)):
        for draw in (0, 1):
            for seed in range(3):
                metrics = aggregate_metrics(0.8, 0.6, 0.5 + 0.1 * draw, 0.5) | {"val/acc_id": val[draw][seed]}
                write_run(tmp_path / "s", f"ERM-{width}-{draw}-{seed}", baseline="ERM", seed=seed, width=width,
                          params=params, metrics=metrics, draw=draw, hparams={"model.lr": LRS[draw]}, converged=True)
    write_manifest(tmp_path / "s")
    run_cli("report", str(tmp_path / "s"))
    chosen = pd.read_csv(tmp_path / "s/selected.csv")
    assert (chosen["per"] == "point").all() and (chosen["draw"] == 1).all() and (chosen["seeds"] == 3).all()
    assert "The choice is taken as given by the intervals" in (tmp_path / "s/report.md").read_text()

    run_cli("report", str(tmp_path / "s"), "--select-per", "seed")
    chosen = pd.read_csv(tmp_path / "s/selected.csv").set_index(["model.width", "draw"])
    assert (chosen["per"] == "seed").all() and len(chosen) == 4  # 2 widths x the 2 draws some seed chose
    assert chosen.loc[(16, 1), "seeds"] == 1 and chosen.loc[(16, 0), "seeds"] == 2
    assert chosen.loc[(16, 1), "val/acc_id"] == pytest.approx(0.95)
    assert chosen.loc[(16, 0), "val/acc_id"] == pytest.approx(0.80)
    report = (tmp_path / "s/report.md").read_text()
    assert report.startswith("## Verdict\n\n**Selection: `id_val` (by `val/acc_id`, per seed)")
    assert "carries the selection's noise" in report.split("## Criterion")[1]
    points = report.split("## Endpoints at each model size")[1].split("##")[0]
    assert "| confounded | ERM | 10,000 | 0.800 | 0.600 | 0.533 |" in points  # worst group: 0.6, 0.5, 0.5 averaged
    err = cli_error(capsys, "report", str(tmp_path / "s"), "--select-per", "x")
    assert len(err) == 1 and "--select-per" in err[0] and "'point', 'seed'" in err[0]
