"""CivilComments (Borkan et al. 2019; Koh et al. 2021, WILDS): online comments, toxic or not, that mention
demographic identities. Mentions of an identity go with toxicity in the data, a spurious correlate."""

import warnings

import pandas as pd
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from torch import Tensor
from wilds.datasets.wilds_dataset import WILDSDataset

from testbed.envs.base import Batch
from testbed.envs.tokenizer import tokenizer as load_tokenizer
from testbed.envs.wilds_env import WildsEnv
from testbed.errors import check_choice, check_positive

IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white", "identity_any")
SPECIAL = ("[PAD]", "[UNK]", "[CLS]")  # [PAD] is id 0, the pad id of every token environment


class CivilComments(WildsEnv):
    """Label `y`: toxic (1) or not (0); spurious attribute `a`: whether the comment mentions an identity (1).

    Read by WILDS from `<root>/civilcomments_v1.0/` (`all_data_with_identities.csv`); WILDS binarises the
    toxicity and identity scores at 0.5. Inputs are token ids `[n, seq_len]`, padded with the tokenizer's pad id.

    Args:
        spurious_field: the identity that is the attribute: `identity_any` (any identity), or one of male,
            female, LGBTQ, christian, muslim, other_religions, black, white.
        tokenizer: None builds a WordPiece tokenizer of `vocab_size` tokens from the training comments (for
            arch transformer; nothing is downloaded); a Hugging Face name or folder uses that model's tokenizer
            (for arch hf:<the same name>).
        vocab_size: size of the vocabulary built from the training comments (with `tokenizer: null`).
        seq_len: tokens kept per comment; longer comments are truncated.
        train_corr, n_train: resample and cut the training split, as for Waterbirds (see `WildsEnv`).
    """

    files = ("all_data_with_identities.csv",)

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        spurious_field: str = "identity_any",
        tokenizer: str | None = None,
        vocab_size: int = 8000,
        seq_len: int = 128,
        train_corr: float | None = None,
        n_train: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        check_choice("spurious_field", spurious_field, IDENTITIES)
        check_positive("vocab_size", vocab_size)
        check_positive("seq_len", seq_len)
        super().__init__("civilcomments", spurious_field, root=root, download=download, version="1.0",
                         train_corr=train_corr, n_train=n_train, batch_size=batch_size,
                         eval_batch_size=eval_batch_size, seed=seed)
        self.tokenizer, self.seq_len = tokenizer, seq_len
        self.input_shape = (seq_len,)
        train_rows = torch.cat([self.rows[n] for n in self.names("train")])
        if tokenizer is None:
            self.encoder = self.build_tokenizer([self.source.get_input(i) for i in train_rows.tolist()], vocab_size)
            self.vocab_size = self.encoder.get_vocab_size()
        else:
            self.encoder = load_tokenizer(tokenizer)
            if self.encoder.pad_token is None:  # GPT-2, Pythia: pad with end-of-text, as `pad_id` says
                self.encoder.pad_token = self.encoder.eos_token
            self.vocab_size = len(self.encoder)

    def open(self, root: str, download: bool, version: str | None) -> WILDSDataset:
        """WILDS' loader writes split numbers into the csv's `split` column, which pandas 3 reads as strings by
        default and then refuses ints: read it with pandas' object strings, as the loader was written for. The
        split numbers it leaves in an object array become int64, as the other WILDS datasets give them."""
        with warnings.catch_warnings(), pd.option_context("future.infer_string", False):
            warnings.filterwarnings("ignore", message=".*infer_string")
            source = super().open(root, download, version)
        source._split_array = source.split_array.astype("int64")
        return source

    def build_tokenizer(self, texts: list[str], vocab_size: int) -> Tokenizer:
        """A lower-cased WordPiece vocabulary of the training comments (as BERT's), each encoding starting with
        [CLS] (so that no comment is empty), padded with [PAD] and truncated to `seq_len`."""
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL)))
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A", special_tokens=[("[CLS]", 2)])
        tok.enable_truncation(self.seq_len)
        tok.enable_padding(pad_id=0, pad_token="[PAD]", length=self.seq_len)
        return tok

    def encode(self, texts: list[str]) -> Tensor:
        if isinstance(self.encoder, Tokenizer):
            return torch.tensor([e.ids for e in self.encoder.encode_batch(texts)], dtype=torch.long)
        return self.encoder(texts, padding="max_length", truncation=True, max_length=self.seq_len,
                            return_tensors="pt")["input_ids"].long()

    def load(self, rows: Tensor) -> Batch:
        """The comments of `rows`, from WILDS' dataset object, tokenized into `[n, seq_len]` ids."""
        texts = [self.source.get_input(i) for i in rows.tolist()]
        x = self.encode(texts) if texts else torch.empty(0, self.seq_len, dtype=torch.long)
        return Batch(x, self.y[rows], self.a[rows], self.env_of[rows], rows[:, None])

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        return batch  # token ids go to the model as they are
