"""WildsEnv: a WILDS image-classification dataset whose metadata holds a spurious attribute.

The data are read by WILDS' own loader (`wilds.get_dataset`). Its splits become sub-environments named
`role:split` (by default `train:train`, `id:val`, `ood:test`). The training data can be resampled to any
correlation P(a == y) between label and attribute (`train_corr`) and cut to `n_train` samples, so that
correlation strength and data size can be swept like any other knob.

Memory: images are decoded once, resized and kept as uint8 tensors, a quarter of float32 (all 11,788
Waterbirds images at 224 x 224 take 1.8 GB). Batches travel to the device as uint8 and are converted to
float and normalised there, in `on_after_batch_transfer`. Only the samples in use are decoded, so a
resampled or cut training set costs only its own size.

Validation samples: each held-out split (`id`, `ood`) is partitioned once, by a fixed seed that does not depend
on the run's `seed`, into validation samples (`VAL_FRACTION` of it, DomainBed's holdout fraction) and test
samples (the rest), so every run is tested on the same samples and selects on others.

Accuracy means what each role says: where a dataset's `id` splits are not distributed as its training data
(Waterbirds' are group-balanced; any split after `train_corr` resampling), `id` accuracy is the per-group accuracy
weighted by the training group frequencies (WILDS' adjusted average); where its `ood` split is i.i.d. with training
(CelebA), `ood` accuracy is the mean per-group accuracy. See `role_weights`.

There is no renderer, so `interventions = ()` and counterfactual metrics are skipped; `query(a=v, n)`
offers the weaker alternative of drawing training samples that have attribute v.
"""

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import get_args

import torch
import wilds
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision import transforms
from wilds.datasets.wilds_dataset import WILDSDataset, WILDSSubset

from testbed.envs.base import Batch, EnvSpec, Role, ShiftedEnv, Split, concat
from testbed.envs.files import require_files
from testbed.errors import ConfigError, check_choice, check_positive, check_unit

STANDARD_SPLITS: dict[str, Role] = {"train": "train", "val": "id", "test": "ood"}
ROLES = get_args(Role)
# torchvision's pretrained models expect these statistics; Sagawa et al. 2020 normalise with them too.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DOWNLOADS = "https://wilds.stanford.edu/downloads"
VAL_FRACTION = 0.2  # of each held-out split, for validation (DomainBed's holdout_fraction; Gulrajani, Lopez-Paz 2020)


@dataclass(frozen=True)
class SplitSpec(EnvSpec):
    """A sub-environment that is a dataset split, named by role and split; its `corr` is measured."""

    split: str

    @property
    def name(self) -> str:
        return f"{self.role}:{self.split}"


def local_version(root: str, dataset: str) -> str | None:
    """The latest version of `dataset` under `root` that WILDS would accept as present (it has a RELEASE file)."""
    found = [m.group(1) for p in Path(root).glob(f"{dataset}_v*")
             if (m := re.fullmatch(rf"{re.escape(dataset)}_v(\d+\.\d+)", p.name)) and
             (p / f"RELEASE_v{m.group(1)}.txt").exists()]
    return max(found, key=lambda v: tuple(map(int, v.split("."))), default=None)


class WildsEnv(ShiftedEnv):
    """Any WILDS image-classification dataset, with one metadata field as the spurious attribute `a`.

    Args:
        dataset: WILDS name, e.g. `waterbirds`, `celebA`, `camelyon17`.
        spurious_field: the metadata field that is the spurious attribute, e.g. `background`.
        root: folder holding `<dataset>_v<version>/` as WILDS lays it out.
        download: fetch the dataset into `root` if it is not there (when the environment is built, so
            before any device process starts).
        version: dataset version; by default the latest one found in `root` (or WILDS' latest, to download).
        splits: role of each WILDS split used; by default train -> train, val -> id, test -> ood.
        train_corr: resample the training data so that P(a == y) = train_corr within every class, keeping
            as many samples as that allows; needs one attribute value per class. None keeps the split as is.
        n_train: keep this many training samples, stratified so that group proportions stay the same;
            a larger `n_train` extends a smaller one. None keeps them all.
        image_size: side of the square images, resized then centre-cropped.
        num_workers: processes that decode images, once, when the data are set up.
    """

    files: tuple[str, ...] = ()  # files inside the dataset folder that the WILDS loader reads
    crop = 1.0  # fraction of the shorter side kept by the centre crop
    # What a role's accuracy stands for where its splits' groups are not drawn as that role says (`role_weights`):
    id_as_training = False  # `id` splits are group-balanced: score them as if their groups were the training data's
    ood_balanced = False  # `ood` splits are i.i.d. with training: score them as if every group were equally likely

    def __init__(
        self,
        dataset: str,
        spurious_field: str,
        root: str = "data",
        download: bool = False,
        version: str | None = None,
        splits: dict[str, Role] | None = None,
        train_corr: float | None = None,
        n_train: int | None = None,
        image_size: int = 224,
        num_workers: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed)
        check_choice("dataset", dataset, wilds.supported_datasets)
        if train_corr is not None:
            check_unit("train_corr", train_corr)
        if n_train is not None:
            check_positive("n_train", n_train)
        check_positive("image_size", image_size)
        if num_workers < 0:
            raise ConfigError(f"num_workers: {num_workers} is not allowed; it must be >= 0")
        self.dataset, self.spurious_field, self.train_corr, self.n_train = dataset, spurious_field, train_corr, n_train
        self.image_size, self.num_workers = image_size, num_workers
        self.input_shape = (3, image_size, image_size)
        self.source = src = self.open(root, download, version or local_version(root, dataset))
        if not src.is_classification or src.y_size != 1:
            raise ConfigError(f"dataset: {dataset} is not a single-label classification dataset")
        fields = [f for f in src.metadata_fields if f not in ("y", "from_source_domain")]
        check_choice("spurious_field", spurious_field, fields)
        splits = STANDARD_SPLITS if splits is None else splits
        for split, role in splits.items():
            check_choice("splits", split, src.split_dict)
            check_choice(f"splits.{split}", role, ROLES)
        self.n_classes = src.n_classes
        self.y = src.y_array.long()
        self.a = src.metadata_array[:, src.metadata_fields.index(spurious_field)].long()
        self._n_attr = int(self.a.max()) + 1
        if train_corr is not None and self._n_attr != self.n_classes:
            raise ConfigError(f"train_corr: needs one attribute value per class; {spurious_field} has "
                              f"{self._n_attr} values and {dataset} has {self.n_classes} classes")

        self.specs = [SplitSpec(splits[s], math.nan, s) for s in sorted(splits, key=lambda s: ROLES.index(splits[s]))]
        self.check_specs()
        split_array = torch.as_tensor(src.split_array)
        members = {s.split: (split_array == src.split_dict[s.split]).nonzero().squeeze(1) for s in self.specs}
        self.train_pool = torch.cat([members[s.split] for s in self.specs if s.role == "train"])
        kept = self.resample(self.train_pool)
        self.rows, self.val_rows = {}, {}
        for s in self.specs:
            if s.role == "train":
                self.rows[s.name] = kept[torch.isin(kept, members[s.split])]
            else:
                self.val_rows[s.name], self.rows[s.name] = self.hold_out(members[s.split])
        self.specs = [replace(s, corr=self.corr(self.rows[s.name])) for s in self.specs]
        self.env_of = torch.full_like(self.y, -1)  # sub-environment of every sample in a split in use
        for e, spec in enumerate(self.specs):
            self.env_of[members[spec.split]] = e

    def open(self, root: str, download: bool, version: str | None) -> WILDSDataset:
        """WILDS' dataset object: metadata now, images on demand. Fails with a ConfigError before WILDS
        writes anything (it creates `root` even when the data are missing)."""
        folder = f"{self.dataset}_v{version or '<version>'}"
        if not download:
            files = [f"{folder}/RELEASE_v{version or '<version>'}.txt", *(f"{folder}/{f}" for f in self.files)]
            require_files(self.dataset, root, files, DOWNLOADS)
        return wilds.get_dataset(dataset=self.dataset, version=version, root_dir=root, download=download)

    @property
    def n_attr(self) -> int:
        return self._n_attr

    def corr(self, rows: Tensor) -> float:
        """P(a == y) among `rows`; NaN where attribute values do not correspond to classes."""
        if self._n_attr != self.n_classes or len(rows) == 0:
            return math.nan
        return (self.a[rows] == self.y[rows]).double().mean().item()

    def resample(self, pool: Tensor) -> Tensor:
        """The training samples in use, in an order whose every prefix keeps the cells' proportions.

        Cells are the (label, attribute) groups, or with `train_corr` = c, for each class the samples whose
        attribute agrees with it and those whose attribute does not, cut to the largest sizes in ratio c : 1 - c.
        """
        pool = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(self.seed))]
        y, a = self.y[pool], self.a[pool]
        if self.train_corr is None:
            cells = [pool[(y == k) & (a == v)] for k in range(self.n_classes) for v in range(self._n_attr)]
        else:
            c, cells = self.train_corr, []
            for k in range(self.n_classes):
                agree, disagree = pool[(y == k) & (a == k)], pool[(y == k) & (a != k)]
                total = math.floor(min(len(agree) / c if c > 0 else math.inf,
                                       len(disagree) / (1 - c) if c < 1 else math.inf) + 1e-9)
                n_agree = min(len(agree), round(c * total))
                n_disagree = min(len(disagree), total - n_agree)
                if n_agree + n_disagree == 0:
                    raise ConfigError(f"train_corr: {c} leaves no training sample of class {k}")
                cells += [agree[:n_agree], disagree[:n_disagree]]
        # The i-th of n samples of a cell gets the key (i + 0.5) / n: sorting interleaves the cells evenly.
        keys = torch.cat([(torch.arange(len(cell)) + 0.5) / max(len(cell), 1) for cell in cells])
        kept = torch.cat(cells)[keys.argsort(stable=True)]
        if self.n_train is not None:
            if self.n_train > len(kept):
                raise ConfigError(f"n_train: {self.n_train} is not allowed; {self.dataset} has {len(kept)} "
                                  "training samples" + ("" if self.train_corr is None else
                                                        f" at train_corr {self.train_corr}"))
            kept = kept[: self.n_train]
        return kept

    def hold_out(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """A held-out split's validation and test rows: `VAL_FRACTION` of each (label, attribute) group, drawn
        with a fixed seed, for validation; the rest for test."""
        rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))]
        groups = self.y[rows] * self._n_attr + self.a[rows]
        val = torch.cat([cell[: round(VAL_FRACTION * len(cell))] for v in groups.unique()
                         for cell in [rows[groups == v]]])
        return val.sort().values, rows[~torch.isin(rows, val)].sort().values

    def group_counts(self) -> dict[str, Tensor]:
        """Samples per group in each sub-environment (validation and test samples together): `counts[name][y, a]`."""
        k, m = self.n_classes, self._n_attr
        rows = {n: torch.cat([r, self.val_rows.get(n, r[:0])]) for n, r in self.rows.items()}
        return {n: torch.bincount(self.y[r] * m + self.a[r], minlength=k * m).view(k, m) for n, r in rows.items()}

    def role_weights(self) -> dict[str, Tensor]:
        """Training group frequencies for `id` (WILDS' adjusted average) where the dataset declares its held-out
        splits group-balanced or `train_corr` resampled the training data away from them; uniform ones for `ood`
        (the mean per-group accuracy) where the dataset declares its test split i.i.d. with training."""
        weights = {}
        if self.id_as_training or self.train_corr is not None:
            train = sum(c for n, c in self.group_counts().items() if n in self.names("train")).flatten().double()
            weights["id"] = train / train.sum()
        if self.ood_balanced:
            weights["ood"] = torch.full((self.n_groups,), 1.0 / self.n_groups, dtype=torch.double)
        return weights

    def transform(self) -> transforms.Compose:
        return transforms.Compose([transforms.Resize(round(self.image_size / self.crop)),
                                   transforms.CenterCrop(self.image_size), transforms.PILToTensor()])

    def load(self, rows: Tensor) -> Batch:
        """Decode the images of `rows` into one uint8 tensor, through WILDS' subset and a DataLoader."""
        subset = WILDSSubset(self.source, rows.numpy(), self.transform())
        loader = DataLoader(subset, batch_size=256, num_workers=self.num_workers)
        x = torch.cat([x for x, _, _ in loader]) if len(rows) else torch.empty(0, *self.input_shape, dtype=torch.uint8)
        return Batch(x, self.y[rows], self.a[rows], self.env_of[rows], rows[:, None])

    def make(self, spec: EnvSpec, index: int, split: Split) -> Batch:
        return self.load((self.val_rows if split == "val" else self.rows)[spec.name])

    def retraining_data(self, name: str) -> Batch:
        """The whole dataset split (its validation and its test samples), as Kirichenko et al. fit DFR on all of
        WILDS' validation split (Waterbirds: 133 samples in each minority group, against 27 in its `VAL_FRACTION`
        alone). The `id` test metrics of a model retrained so are in-sample; its `ood` ones are not."""
        return concat([self.val_data[name], self.data[name]])

    def setup(self, stage: str | None = None) -> None:
        if not self.data:
            for name, counts in self.group_counts().items():
                rank_zero_info(f"{self.dataset} {name}: {int(counts.sum())} samples; "
                               f"counts by (y, {self.spurious_field}): {counts.tolist()}")
        super().setup(stage)

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """uint8 images become normalised float on the device, a quarter of the transfer of float32."""
        mean, std = (torch.tensor(s, device=batch.x.device)[:, None, None] for s in (IMAGENET_MEAN, IMAGENET_STD))
        return batch._replace(x=(batch.x.float() / 255 - mean) / std)

    def query(self, a: Tensor, generator: torch.Generator | None = None) -> Batch:
        """For each requested attribute value, one training sample (drawn with replacement) that has it: the
        weaker stand-in for do(a) where no renderer exists. Inputs are uint8, as in `data`; they become model
        inputs in `on_after_batch_transfer`."""
        rows = torch.empty(len(a), dtype=torch.long)
        for v in a.unique().tolist():
            pool = self.train_pool[self.a[self.train_pool] == v]
            if len(pool) == 0:
                raise ValueError(f"no training sample of {self.dataset} has {self.spurious_field} = {v}")
            where = (a == v).nonzero().squeeze(1).cpu()
            rows[where] = pool[torch.randint(len(pool), (len(where),), generator=generator)]
        return self.load(rows)
