"""Tiny copies of real datasets in their on-disk formats, read back by the real torchvision and WILDS loaders."""

import csv
import struct
from pathlib import Path

import numpy as np
from PIL import Image

# The 40 attribute columns of CelebA's list_attr_celeba.csv, in the published order.
CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones "
    "Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline "
    "Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young"
).split()
LAND, WATER = (60, 160, 60), (40, 90, 200)  # background colours of the fake Waterbirds photos


def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format of LeCun's MNIST files: magic (0, 0, 0x08 = uint8, ndim), big-endian sizes, the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def fake_digits(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28 x 28 strokes: a bar whose position depends on the digit, at a jittered place, on faint noise."""
    images = rng.integers(0, 40, (len(labels), 28, 28))
    for img, digit in zip(images, labels):
        col = 3 + 2 * int(digit) + int(rng.integers(0, 3))
        img[4:24, col:col + 3] = 255
    return images


def write_mnist(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """`root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`, as torchvision's MNIST reads them."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        write_idx(root / f"MNIST/raw/{prefix}-images-idx3-ubyte", fake_digits(labels, rng))
        write_idx(root / f"MNIST/raw/{prefix}-labels-idx1-ubyte", labels)
    return root


def photo(background: tuple[int, int, int], foreground: tuple[int, int, int], size: tuple[int, int],
          rng: np.random.Generator) -> Image.Image:
    w, h = size
    pixels = np.empty((h, w, 3), dtype=np.uint8)
    pixels[:] = background
    x, y = rng.integers(w // 4, w // 2), rng.integers(h // 4, h // 2)  # the subject, away from the border
    pixels[y:y + h // 3, x:x + w // 3] = foreground
    return Image.fromarray(pixels)


def write_waterbirds(root: Path, groups: dict[str, dict[tuple[int, int], int]], seed: int = 0) -> Path:
    """`root/waterbirds_v1.0/` with `RELEASE_v1.0.txt`, `metadata.csv` and JPEG photos. `groups[split][(y, place)]`
    is the number of birds of that group in that split; the background colour shows the place."""
    rng = np.random.default_rng(seed)
    folder = root / "waterbirds_v1.0"
    folder.mkdir(parents=True)
    (folder / "RELEASE_v1.0.txt").write_text("v1.0\n")
    rows = []
    for split_id, split in enumerate(("train", "val", "test")):
        for (y, place), n in groups[split].items():
            for _ in range(n):
                i = len(rows) + 1
                species = "001.Black_footed_Albatross" if y else "002.Northern_Flicker"
                name = f"{species}/bird_{i:04d}.jpg"
                (folder / species).mkdir(exist_ok=True)
                photo(WATER if place else LAND, (230, 230, 230), (28, 24), rng).save(folder / name, quality=95)
                rows.append([i, name, y, split_id, place, f"{'o/ocean' if place else 'b/bamboo_forest'}/{i:08d}.jpg"])
    with open(folder / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows([["img_id", "img_filename", "y", "split", "place", "place_filename"], *rows])
    return root


def write_celeba(root: Path, groups: dict[str, dict[tuple[int, int], int]], seed: int = 0) -> Path:
    """`root/celebA_v1.0/` with `RELEASE_v1.0.txt`, `list_attr_celeba.csv` (attributes in {-1, 1}),
    `list_eval_partition.csv` and 178 x 218 JPEG faces in `img_align_celeba/`. `groups[split][(blond, male)]`
    is the number of faces of that group in that split."""
    rng = np.random.default_rng(seed)
    folder = root / "celebA_v1.0"
    (folder / "img_align_celeba").mkdir(parents=True)
    (folder / "RELEASE_v1.0.txt").write_text("v1.0\n")
    attrs, partition = [["image_id", *CELEBA_ATTRS]], [["image_id", "partition"]]
    blond_at, male_at = CELEBA_ATTRS.index("Blond_Hair"), CELEBA_ATTRS.index("Male")
    for split_id, split in enumerate(("train", "val", "test")):
        for (blond, male), n in groups[split].items():
            for _ in range(n):
                name = f"{len(partition):06d}.jpg"
                values = rng.choice([-1, 1], len(CELEBA_ATTRS))
                values[blond_at], values[male_at] = 2 * blond - 1, 2 * male - 1
                hair = (240, 220, 120) if blond else (50, 40, 30)
                photo(hair, (200, 160, 140), (178, 218), rng).save(folder / "img_align_celeba" / name)
                attrs.append([name, *values])
                partition.append([name, split_id])
    for file, rows in (("list_attr_celeba.csv", attrs), ("list_eval_partition.csv", partition)):
        with open(folder / file, "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return root
