"""`testbed show`: a panel per sub-environment with samples, their y and a, and their counterfactuals."""

from conftest import CONFIGS, run_cli
from PIL import Image

from testbed.envs import Braking, SpuriousShapes


def panels(png) -> list[str]:
    """The panel captions `testbed show` records in the PNG, in order."""
    return Image.open(png).text["Description"].split("; ")


def test_show_draws_a_panel_per_sub_environment_of_spurious_shapes(workdir, capsys):
    run_cli("show", "--data=SpuriousShapes", "--data.n_train=200", "--data.n_val=50", "--data.n_test=50",
            "--n", "3", "--out", "shapes.png")
    names = [s.name for s in SpuriousShapes().specs]
    assert [p.split(" ")[0] for p in panels(workdir / "shapes.png")] == names
    width, height = Image.open(workdir / "shapes.png").size
    assert width > 600 and height > 400
    assert capsys.readouterr().out.strip() == "figure: shapes.png"  # images: no text rendering


def test_show_writes_the_braking_tasks_vectors_as_text(workdir, capsys):
    run_cli("show", "-c", str(CONFIGS / "control" / "braking.yaml"), "--data.n_demos=4", "--data.n_val=2",
            "--data.n_eval=2", "--out", "braking.png")
    names = [s.name for s in Braking(n_demos=4, n_val=2, n_eval=2).specs]
    assert [p.split(" ")[0] for p in panels(workdir / "braking.png")] == names
    assert panels(workdir / "braking.png")[-1].endswith("the states the untrained model visits")
    out = capsys.readouterr().out
    assert out.count("do(a): value, x") == 3
    rows = [line.split() for line in out.splitlines() if line.startswith("y=")]
    assert len(rows) == 12 and all(r[1].startswith("a=") for r in rows)
    # do(a) sets the other light, and changes only the light: [reading, light] -> [reading, 1 - light]
    row = next(r for r in rows if r[1] == "a=0")
    reading = row[2]
    assert row[2:] == [reading, "0.00]", "a=1,", reading, "1.00]"]


def test_show_rejects_a_bad_option_with_one_line(workdir, capsys):
    from conftest import cli_error

    assert cli_error(capsys, "show", "--data=SpuriousShapes", "--data.label_noise=3") == [
        "testbed: error: data.label_noise: 3.0 is outside the allowed range [0, 1]"]
