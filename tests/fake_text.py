"""Tiny text data in real on-disk formats: a CivilComments copy as WILDS lays it out, and a Hugging Face model
folder (configuration and tokenizer, no weights) built locally."""

import csv
from pathlib import Path

import numpy as np

IDENTITY_COLUMNS = ["male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white"]
AUX_COLUMNS = ["identity_any", "severe_toxicity", "obscene", "threat", "insult", "identity_attack", "sexual_explicit"]
TOXIC = "you idiot this is stupid garbage and you are a fool".split()
CIVIL = "thanks for the thoughtful article i agree with the point made here".split()
GROUPS = "muslim christian women men".split()


def write_civilcomments(root: Path, groups: dict[str, dict[tuple[int, int], int]], seed: int = 0) -> Path:
    """`root/civilcomments_v1.0/` with `RELEASE_v1.0.txt` and `all_data_with_identities.csv` (the columns WILDS
    reads: an unnamed index, comment_text, split, toxicity and the identity and auxiliary scores in [0, 1]).
    `groups[split][(toxic, identity)]` is the number of comments of that group in that split; identity comments
    mention a group and are scored as `muslim` (and `identity_any`)."""
    rng = np.random.default_rng(seed)
    folder = root / "civilcomments_v1.0"
    folder.mkdir(parents=True)
    (folder / "RELEASE_v1.0.txt").write_text("v1.0\n")
    rows = []
    for split, cells in groups.items():
        for (toxic, identity), n in cells.items():
            for _ in range(n):
                words = list(rng.choice(TOXIC if toxic else CIVIL, int(rng.integers(3, 12))))
                if identity:
                    words.insert(int(rng.integers(0, len(words))), str(rng.choice(GROUPS)))
                scores = {c: 0.0 for c in IDENTITY_COLUMNS + AUX_COLUMNS}
                scores["muslim"] = scores["identity_any"] = float(identity)
                scores["insult"] = 0.8 if toxic else 0.1
                toxicity = rng.uniform(0.5, 1.0) if toxic else rng.uniform(0.0, 0.49)
                rows.append([len(rows), " ".join(words), split, round(toxicity, 3), *scores.values()])
    with open(folder / "all_data_with_identities.csv", "w", newline="") as f:
        csv.writer(f).writerows([["", "comment_text", "split", "toxicity", *IDENTITY_COLUMNS, *AUX_COLUMNS], *rows])
    return root


def write_tiny_hf_model(folder: Path, kind: str = "gpt2") -> Path:
    """A Hugging Face model folder with a 2-layer `gpt2` or `bert` configuration and a word-level tokenizer of
    the fake comments' words (built with `tokenizers`), as `save_pretrained` writes them: no weights."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, GPT2Config, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", *dict.fromkeys(TOXIC + CIVIL + GROUPS)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                   **({"eos_token": "[PAD]"} if kind == "gpt2" else {"pad_token": "[PAD]"}))
    fast.save_pretrained(folder)
    if kind == "gpt2":  # no pad token, as GPT-2: it pads with end-of-text
        config = GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=64, vocab_size=len(words),
                            bos_token_id=0, eos_token_id=0)
    else:
        config = BertConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                            max_position_embeddings=64, vocab_size=len(words), pad_token_id=0)
    config.save_pretrained(folder)
    return folder
