"""Hugging Face text models and their tokenizers, named as on the hub (`gpt2`, `EleutherAI/pythia-70m`,
`bert-base-uncased`) or by a local folder holding `config.json` and the tokenizer's files.

`transformers` is imported on first use: it takes seconds, and only `hf:` backbones and their tokenizers need it.
"""

from torch import Tensor, nn

from testbed.envs.tokenizer import HINT, pad_id, tokenizer
from testbed.errors import ConfigError


def check_tokenizer(arch: str, env_tokenizer: str | None) -> None:
    """An `hf:` model reads the ids of its own tokenizer: the environment must tokenize with it."""
    name = arch.removeprefix("hf:")
    if arch.startswith("hf:") and env_tokenizer != name:
        raise ConfigError(f"data.tokenizer: arch {arch} reads the ids of its own tokenizer; give the environment "
                          f"tokenizer {name} (an environment of text, such as CivilComments)")


class HFEncoder(nn.Module):
    """A `transformers` base model over token ids `[n, seq_len]`, mean-pooled over the non-padding tokens."""

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.model, self.pad_id = model, pad_id

    def forward(self, x: Tensor) -> Tensor:
        keep = x != self.pad_id
        h = self.model(input_ids=x, attention_mask=keep.long()).last_hidden_state
        keep = keep.unsqueeze(2).to(h.dtype)
        return (h * keep).sum(1) / keep.sum(1).clamp(min=1)


def hf_model(name: str, n_classes: int, weights: str | None, vocab_size: int | None) -> nn.Sequential:
    """`nn.Sequential(encoder, head)`: the model's pretrained weights with `weights: DEFAULT`, else a random
    initialisation of its architecture (nothing but its configuration is fetched)."""
    from transformers import AutoConfig, AutoModel

    if weights not in (None, "DEFAULT"):
        raise ConfigError(f"weights: {weights!r} is not allowed for hf:{name}; choose DEFAULT (the hub's weights) "
                          "or leave it unset (random initialisation)")
    if vocab_size is None:
        raise ConfigError(f"arch: hf:{name} takes token ids; the environment gives images: use a torchvision: model")
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ConfigError(f"arch: no Hugging Face model hf:{name} ({type(err).__name__}); {HINT}") from err
    model = AutoModel.from_pretrained(name) if weights else AutoModel.from_config(config)
    embeddings = model.get_input_embeddings()
    if vocab_size > embeddings.num_embeddings:
        raise ConfigError(f"arch: hf:{name} reads the ids of its own tokenizer, and the environment's {vocab_size} "
                          f"token ids do not fit its {embeddings.num_embeddings}; set data.tokenizer to {name}")
    return nn.Sequential(HFEncoder(model, pad_id(tokenizer(name, "arch"))),
                         nn.Linear(embeddings.embedding_dim, n_classes))
