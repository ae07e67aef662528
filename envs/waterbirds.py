"""Waterbirds (Sagawa et al. 2020): land- or waterbirds, photographed on land or water backgrounds."""

from testbed.envs.wilds_env import WildsEnv


class Waterbirds(WildsEnv):
    """Label `y`: waterbird (1) or landbird (0); spurious attribute `a`: water (1) or land (0) background.

    The official training split agrees 95% of the time (P(a == y) = 0.95); validation (`id:val`) and test
    (`ood:test`) are balanced within each class. So `id:val` is not distributed as training: its accuracy, and
    with it `acc_id` and the OOD gap, is WILDS' adjusted average, the per-group accuracy weighted by the
    training data's group frequencies (of the training set in use, after `train_corr` and `n_train`).
    Read by WILDS from `<root>/waterbirds_v1.0/` (`metadata.csv` and the images it lists). Images are resized
    to `image_size * 256 / 224` and centre-cropped to `image_size`, as Sagawa et al. 2020 do. See `WildsEnv`
    for the other knobs.
    """

    files = ("metadata.csv",)
    crop = 224 / 256
    id_as_training = True

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        train_corr: float | None = None,
        n_train: int | None = None,
        image_size: int = 224,
        num_workers: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__("waterbirds", "background", root=root, download=download, version="1.0",
                         train_corr=train_corr, n_train=n_train, image_size=image_size, num_workers=num_workers,
                         batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)
