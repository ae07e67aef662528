"""Sweep folders of finished runs in the exact on-disk format of `testbed sweep` (run.json, results.json, done,
manifest.json), with metrics from a known truth, for the analysis commands."""

import json
from pathlib import Path


def write_run(sweep_dir: Path, run_id: str, *, baseline: str, seed: int, width: int, params: float,
              metrics: dict[str, float], regime: str = "confounded", n_train: int = 1000, draw: int | None = None,
              hparams: dict | None = None, converged: bool | None = None, ceiling: float | None = None,
              axes: dict | None = None, stage: str = "", n_attr: int | None = None,
              spurious_accuracy: float | None = None) -> None:
    """One finished run (with more sweep `axes` and a sweep `stage` if given) of a two-class environment. Leaving
    draw, converged, ceiling and n_attr at None writes the files of an older run."""
    out = sweep_dir / run_id
    out.mkdir(parents=True)
    run = {"sweep": sweep_dir.name, "axes": {"config": regime, "model": baseline, "model.width": width, **(axes or {})},
           "seed": seed, "argv": [], "id": run_id, "stage": stage}
    if draw is not None:
        run |= {"draw": draw, "hparams": hparams or {}}
    res = {"model": baseline, "data": "SpuriousShapes", "seed": seed, "params": int(params), "n_train": n_train,
           "train_corr": 0.85, "steps": 100, "epochs": 1, "train_samples": 1000, "flops_per_sample": 6 * params,
           "train_flops": 6 * params * n_train, "wall_time_s": 1.0, "metrics": metrics}
    if converged is not None:
        res["convergence"] = {"criterion": "train loss plateau (tol 1e-3, patience 3)", "converged": converged,
                              "train_loss": 0.3, "train_acc": 0.9 if converged else 0.6}
    if ceiling is not None:
        res["ceiling"] = ceiling
    if spurious_accuracy is not None:
        res["spurious_accuracy"] = spurious_accuracy
    if n_attr is not None:
        res |= {"n_classes": 2, "n_attr": n_attr}
    (out / "run.json").write_text(json.dumps(run))
    (out / "results.json").write_text(json.dumps(res))
    (out / "done").write_text("")


def write_manifest(sweep_dir: Path) -> None:
    ids = [d.name for d in sorted(sweep_dir.iterdir()) if (d / "done").exists()]
    (sweep_dir / "manifest.json").write_text(json.dumps({"sweep": sweep_dir.name, "runs": ids}))


def aggregate_metrics(acc_id: float, acc_avg: float, acc_wg: float, reliance: float | None = None,
                      probe_wg: float | None = None, groups: dict[int, float] | None = None) -> dict[str, float]:
    """The aggregate test metrics of a run (and its probe's worst-group accuracy, and with `groups` the accuracy
    of each group g, pooled and on the ID environment)."""
    out = {"test/acc_id": acc_id, "test/acc_avg": acc_avg, "test/acc_wg": acc_wg, "test/ood_gap": acc_id - acc_avg,
           "test/ood:corr=0.10/acc": acc_avg}
    if reliance is not None:
        out["test/spurious_reliance"] = reliance
    for g, acc in (groups or {}).items():
        out |= {f"test/acc_g{g}": acc, f"test/id:corr=0.90/acc_g{g}": acc}
    if probe_wg is not None:
        out |= {"probe/acc_wg": probe_wg, "probe/acc_avg": probe_wg + 0.05, "probe/spurious_reliance": 0.1}
    return out
