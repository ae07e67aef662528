"""The table `fit`, `validate` and `test` end with: what a run found, per sub-environment and pooled, in plain text.

It reads only a run's metrics and scale (the contents of `results.json`), so it needs neither torch nor Lightning.
"""

import math

# Columns of the table: the metric of each row and its heading.
COLUMNS = [("acc", "acc"), ("acc_wg", "worst group"), ("spurious_reliance", "spurious reliance"),
           ("causal_sensitivity", "causal sensitivity")]
CLOSED_LOOP = [("return", "return"), ("return_norm", "return / expert's"), ("crash_rate", "crashes per episode")]


def cell(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def rows(metrics: dict[str, float], stage: str) -> list[tuple[str, dict[str, float]]]:
    """(label, {column metric: value}) per sub-environment of `stage`, in the order logged, then the pooled rows."""
    envs: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == stage:
            envs.setdefault(parts[1], {})[parts[2]] = value
    out = [(name, values) for name, values in envs.items()]
    agg = {key.split("/", 1)[1]: v for key, v in metrics.items() if key.count("/") == 1 and key.startswith(stage + "/")}
    if "acc_id" in agg:
        out.append(("ID (pooled)", {"acc": agg["acc_id"], "acc_wg": agg.get("acc_wg_id")}))
    if "acc_avg" in agg:
        out.append(("OOD (pooled)", {"acc": agg["acc_avg"], "acc_wg": agg.get("acc_wg"),
                                     "spurious_reliance": agg.get("spurious_reliance"),
                                     "causal_sensitivity": agg.get("causal_sensitivity")}))
    if stage != "val" and "val/acc_id" in metrics:  # the selection score, on held-out samples (not the test ones)
        out.append(("validation ID (pooled)", {"acc": metrics["val/acc_id"], "acc_wg": metrics.get("val/acc_wg_id")}))
    return out


def headline(run: dict) -> str:
    """`ERM on SpuriousShapes: 2 epochs, 1,000 training samples, 18,818 parameters, 3.1 s`, from what is known."""
    parts = [f"{run['epochs']} epochs" if run.get("epochs") else "",  # none: `test` of a checkpoint
             f"{run['n_train']:,} training samples" if run.get("n_train") is not None else "",
             f"{run['params']:,} parameters" if run.get("params") is not None else "",
             f"{run['wall_time_s']:.1f} s" if run.get("wall_time_s") is not None else ""]
    return f"{run.get('model', '?')} on {run.get('data', '?')}: " + ", ".join(p for p in parts if p)


def run_table(run: dict, stage: str = "test") -> str:
    """The run's metrics of `stage` as an aligned table, a row per sub-environment and pooled over each role,
    then the worst OOD environment, the OOD gap and the closed-loop figures where the environment has them."""
    metrics = run.get("metrics", {})
    table = rows(metrics, stage)
    columns = [(m, head) for m, head in COLUMNS if any(values.get(m) is not None for _, values in table)]
    width = max([len("environment")] + [len(label) for label, _ in table])

    def line(label: str, cells: list[str]) -> str:
        cols = [c.rjust(max(len(head), 5)) for c, (_, head) in zip(cells, columns)]
        return "  ".join([label.ljust(width), *cols]).rstrip()

    lines = [headline(run), line("environment", [head for _, head in columns])]
    lines += [line(label, [cell(values.get(m)) for m, _ in columns]) for label, values in table]
    notes = [(f"{stage}/acc_worst_env", "worst OOD environment"), (f"{stage}/ood_gap", "OOD gap (ID - OOD)")]
    extra = [f"{label} {metrics[key]:.3f}" for key, label in notes if key in metrics]
    loop = [f"{label} {metrics[f'{stage}/{key}']:.3f}" for key, label in CLOSED_LOOP if f"{stage}/{key}" in metrics]
    if extra:
        lines.append(", ".join(extra))
    if loop:
        lines.append("closed loop: " + ", ".join(loop))
    return "\n".join(lines)
