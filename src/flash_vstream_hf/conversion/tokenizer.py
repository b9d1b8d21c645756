"""The converted tokenizer: the original LLaMA tokenizer, tokenising as the released one did, plus `<video>`.

The released checkpoint was served with the slow sentencepiece `LlamaTokenizer` of transformers 4.31 in its
legacy mode: every piece of text between special tokens is `sp.encode(text)`, and sentencepiece's dummy prefix
puts a `▁` in front of each piece, even one that starts with a space (docs/original_model.md, "Tokenisation").
transformers 5 only has the `tokenizers` backend, and its `LlamaTokenizer` uses a `Metaspace` pre-tokenizer that
skips the prefix when the text already starts with a space, so `" x"` gives one `▁` fewer than the original
(docs/transformers_notes.md, "Tokenizer backend"). The backend built here prepends the `▁` unconditionally with
a normaliser (the layout transformers' own Llama converter used to produce); it is saved as a plain
`TokenizersBackend` so that loading keeps this backend instead of rebuilding the stock one. Because added tokens
are split off before normalisation, the text after `<video>` gets its own `▁`, exactly what the original's
chunk-wise `tokenizer_image_token` produced.
"""

from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Tokenizer, normalizers
from transformers import LlamaTokenizer, PreTrainedTokenizerFast
from transformers.utils import is_protobuf_available, is_sentencepiece_available

VIDEO_TOKEN = "<video>"
SPIECE_UNDERLINE = "▁"


def load_original_tokenizer(folder: str | os.PathLike):
    """The original LLaMA tokenizer of `folder` as transformers 5 loads it (`tokenizer.model` or `tokenizer.json`)."""
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        if not (folder / "tokenizer.model").is_file():
            raise FileNotFoundError(f"{folder} has no tokenizer.model or tokenizer.json (the LLaMA tokenizer)")
        if not (is_sentencepiece_available() and is_protobuf_available()):
            raise ImportError(
                f"reading the sentencepiece tokenizer.model in {folder} needs sentencepiece and protobuf: "
                "pip install 'flash-vstream-hf[convert]'"
            )
    # LlamaTokenizer directly: AutoTokenizer would also parse config.json, whose model_type it does not know
    return LlamaTokenizer.from_pretrained(os.fspath(folder), legacy=True)


def build_tokenizer(folder: str | os.PathLike, model_max_length: int | None = None) -> PreTrainedTokenizerFast:
    """The tokenizer of a converted checkpoint: the original vocabulary with `<video>` appended as a special
    token (id = the original vocabulary size), BOS added, padding with `<unk>` on the left for batched
    generation."""
    original = load_original_tokenizer(folder)
    backend = Tokenizer.from_str(original.backend_tokenizer.to_str())
    backend.normalizer = normalizers.Sequence(
        [normalizers.Prepend(SPIECE_UNDERLINE), normalizers.Replace(" ", SPIECE_UNDERLINE)]
    )
    backend.pre_tokenizer = None
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=original.bos_token,
        eos_token=original.eos_token,
        unk_token=original.unk_token,
        pad_token=original.pad_token or original.unk_token,  # the original pads with unk (id 0)
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length or original.model_max_length,
        extra_special_tokens={"video_token": VIDEO_TOKEN},
    )
    if tokenizer.video_token_id != len(original):
        raise ValueError(
            f"{VIDEO_TOKEN} got id {tokenizer.video_token_id}, expected {len(original)} (the original vocabulary "
            f"size); does the original tokenizer already hold {VIDEO_TOKEN}?"
        )
    return tokenizer
