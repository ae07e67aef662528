"""A dataset that is not on disk stops the command with one line: which files, where, and how to get them."""

import pytest
from conftest import CONFIGS, run_cli

MISSING = [
    ("colored_mnist", "data.root: MNIST is not in {}: expected MNIST/raw/train-images-idx3-ubyte, "
                      "MNIST/raw/train-labels-idx1-ubyte, MNIST/raw/t10k-images-idx3-ubyte, "
                      "MNIST/raw/t10k-labels-idx1-ubyte there; set download to true (--data.download true) "
                      "to fetch it from https://"),
    ("waterbirds", "data.root: waterbirds is not in {}: expected waterbirds_v1.0/RELEASE_v1.0.txt, "
                   "waterbirds_v1.0/metadata.csv there; set download to true (--data.download true) "
                   "to fetch it from https://wilds.stanford.edu/downloads"),
    ("celeba", "data.root: celebA is not in {}: expected celebA_v1.0/RELEASE_v1.0.txt, "
               "celebA_v1.0/list_attr_celeba.csv, celebA_v1.0/list_eval_partition.csv, celebA_v1.0/img_align_celeba "
               "there; set download to true"),
]


@pytest.mark.parametrize("config,message", MISSING, ids=[c for c, _ in MISSING])
def test_missing_data_says_which_files_where_and_how_to_get_them(workdir, capsys, config, message):
    with pytest.raises(SystemExit) as exit_:
        run_cli("fit", "-c", str(CONFIGS / f"envs/{config}.yaml"), "-c", str(CONFIGS / "baselines/erm.yaml"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("testbed: error: " + message.format(workdir / "data")), err
    assert list(workdir.iterdir()) == []
