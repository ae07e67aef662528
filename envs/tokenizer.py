"""Hugging Face tokenizers, named as on the hub (`gpt2`, `bert-base-uncased`) or by a local folder: text
environments tokenise with them, and `hf:` models (`testbed.training.hf`) read their ids.

`transformers` is imported on first use: it takes seconds.
"""

from testbed.errors import ConfigError

HINT = "find names at https://huggingface.co/models (e.g. gpt2, EleutherAI/pythia-70m) or give a local folder"


def tokenizer(name: str, field: str = "tokenizer"):
    """The model's own tokenizer (`transformers.PreTrainedTokenizerBase`), loaded or fetched by `transformers`."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{field}: no Hugging Face tokenizer {name!r} ({type(err).__name__}); {HINT}") from err


def pad_id(tok) -> int:
    """The id a tokenizer pads with; models without a pad token (GPT-2, Pythia) pad with end-of-text."""
    for token_id in (tok.pad_token_id, tok.eos_token_id):
        if token_id is not None:
            return token_id
    raise ConfigError(f"tokenizer: {tok.name_or_path} has neither a pad nor an end-of-text token to pad with")
