"""CelebA (Liu et al. 2015) as Sagawa et al. 2020 use it: blond hair, spuriously tied to sex."""

from testbed.envs.wilds_env import WildsEnv


class CelebA(WildsEnv):
    """Label `y`: `Blond_Hair` (1) or not (0); spurious attribute `a`: `Male` (1) or not (0).

    Blond hair goes with being female: in the official training split only 6% of blond people are male, and
    P(a == y) = 0.45, so a strongly spurious training set is `train_corr` near 0 (e.g. 0.05) and 1 reverses it.
    The official splits are i.i.d.: the test split is the training distribution again, not a shift. The shift
    CelebA measures is to its rare groups (blond men are 1% of the data), so the accuracy of `ood:test` (and
    `acc_avg`) is the mean per-group accuracy, each (hair, sex) group weighted equally (SubpopBench's adjusted
    accuracy), and `acc_wg` its worst group. Sagawa et al. 2020 report that worst group beside the plain test
    accuracy ("average"), which is not `acc_avg` here; `id:val` keeps the plain accuracy (the official validation
    split is i.i.d. with training, as the test split is).
    Read by WILDS from `<root>/celebA_v1.0/` (`list_attr_celeba.csv`, `list_eval_partition.csv`,
    `img_align_celeba/`). The 178 x 218 faces are centre-cropped to a square and resized to `image_size`
    (Sagawa et al. 2020 use 224; the default 64 holds all 202,599 images in 2.5 GB). See `WildsEnv`.
    """

    files = ("list_attr_celeba.csv", "list_eval_partition.csv", "img_align_celeba")
    ood_balanced = True

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        train_corr: float | None = None,
        n_train: int | None = None,
        image_size: int = 64,
        num_workers: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__("celebA", "male", root=root, download=download, version="1.0",
                         train_corr=train_corr, n_train=n_train, image_size=image_size, num_workers=num_workers,
                         batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)
