"""The ChatGLM-6B tokenizer (``ice_text.model``) on ``sentencepiece``, without remote code.

It reproduces ``ChatGLMTokenizer`` of THUDM/chatglm-6b as run by transformers 4.33:

* before SentencePiece, ``\\n`` → ``<n>``, ``\\t`` → ``<|tab|>`` and every run of k = 2…80
  spaces → ``<|blank_k|>``; decoding maps them back;
* text ids are SentencePiece ids + ``num_image_tokens`` (``tokenizer_config.json``: 0 in the
  current release, so ``[MASK]`` = 130000, ``[gMASK]`` = 130001, ``<sop>`` = 130004,
  ``<eop>`` = 130005, ``<pad>`` = 3);
* the special tokens ``<sop> <eop> <unk> <pad> [MASK]`` found in a text are kept whole and
  swallow the spaces around them, each remaining segment is encoded on its own (its own
  dummy prefix), as the 4.33 slow-tokenizer base did;
* ``build_inputs_with_special_tokens``: prompt + ``[gMASK]`` + ``<sop>`` (a pair: + answer +
  ``<eop>``); padding on the left; decoding drops ``<pad>`` and cleans up tokenization
  spaces (the 4.33 default).

The attention mask it returns is the standard 2D padding mask; the model derives ChatGLM's
position ids and prefix-LM mask from it (moelora/models/chatglm/layout.py).
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

from transformers.tokenization_python import PythonBackend

VOCAB_FILES_NAMES = {"vocab_file": "ice_text.model"}


def encode_whitespaces(text: str, max_blank_length: int = 80) -> str:
    """``\\n``, ``\\t`` and space runs → ChatGLM's ``<n>``, ``<|tab|>``, ``<|blank_k|>``."""
    text = text.replace("\n", "<n>").replace("\t", "<|tab|>")
    for k in range(max_blank_length, 1, -1):
        text = text.replace(" " * k, f"<|blank_{k}|>")
    return text


def decode_whitespaces(text: str, max_blank_length: int = 80) -> str:
    text = text.replace("<n>", "\n").replace("<|tab|>", "\t")
    for k in range(2, max_blank_length + 1):
        text = text.replace(f"<|blank_{k}|>", " " * k)
    return text


class ChatGLMTokenizer(PythonBackend):
    """ChatGLM-6B v1 tokenizer.

    Args:
        vocab_file: ``ice_text.model``.
        num_image_tokens: offset of the text ids (``tokenizer_config.json``).
        end_token, gmask_token: ``</s>`` and ``[gMASK]`` (ids via ``end_token_id``,
            ``gmask_token_id``).
        do_lower_case, remove_space: the original's text preprocessing (both off in the
            release).
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str,
        *,
        num_image_tokens: int = 20000,
        bos_token: str = "<sop>",
        eos_token: str = "<eop>",
        end_token: str = "</s>",
        mask_token: str = "[MASK]",
        gmask_token: str = "[gMASK]",
        pad_token: str = "<pad>",
        unk_token: str = "<unk>",
        do_lower_case: bool = False,
        remove_space: bool = False,
        padding_side: str = "left",
        clean_up_tokenization_spaces: bool = True,
        max_blank_length: int = 80,
        **kwargs: Any,
    ) -> None:
        import sentencepiece as spm

        # transformers 5 turns the config's extra *_token keys into special tokens; in the
        # original, end_token and gmask_token are plain attributes ([gMASK] survives decoding)
        specific = dict(kwargs.pop("model_specific_special_tokens", None) or {})
        end_token = str(specific.pop("end_token", end_token))
        gmask_token = str(specific.pop("gmask_token", gmask_token))
        if specific:
            kwargs["model_specific_special_tokens"] = specific
        self.vocab_file = vocab_file
        self.sp = spm.SentencePieceProcessor(model_file=vocab_file)
        self.num_image_tokens = num_image_tokens
        self.max_blank_length = max_blank_length
        self.do_lower_case = do_lower_case
        self.remove_space = remove_space
        self._end_token = end_token
        self._gmask_token = gmask_token
        for name in ("auto_map", "tokenizer_class", "name_or_path"):
            kwargs.pop(name, None)
        super().__init__(
            bos_token=bos_token,
            eos_token=eos_token,
            mask_token=mask_token,
            pad_token=pad_token,
            unk_token=unk_token,
            padding_side=padding_side,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            num_image_tokens=num_image_tokens,
            do_lower_case=do_lower_case,
            remove_space=remove_space,
            **kwargs,
        )
        self.init_kwargs.update(end_token=end_token, gmask_token=gmask_token)
        specials = sorted(
            {str(t) for t in (bos_token, eos_token, unk_token, pad_token, mask_token)},
            key=len,
            reverse=True,
        )
        self._special_split = re.compile("(" + "|".join(re.escape(t) for t in specials) + ")")

    # -- vocabulary -------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.num_image_tokens + self.sp.get_piece_size()

    def get_vocab(self) -> dict[str, int]:
        return {self._convert_id_to_token(i): i for i in range(self.vocab_size)}

    def __len__(self) -> int:
        return self.vocab_size

    def _convert_token_to_id(self, token: str) -> int:
        if token.startswith("<image_") and token.endswith(">") and token[7:-1].isdigit():
            return int(token[7:-1])
        return self.sp.piece_to_id(token) + self.num_image_tokens

    def _convert_id_to_token(self, index: int) -> str:
        if index < self.num_image_tokens:
            return f"<image_{index}>"
        return self.sp.id_to_piece(index - self.num_image_tokens)

    def _convert_token_to_id_with_added_voc(self, token: str) -> int:
        return self._convert_token_to_id(token)

    def convert_ids_to_tokens(
        self, ids: int | list[int], skip_special_tokens: bool = False
    ) -> str | list[str]:
        if isinstance(ids, int):
            return self._convert_id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._convert_id_to_token(int(i)) for i in ids if int(i) not in skip]

    @property
    def gmask_token(self) -> str:
        return self._gmask_token

    @property
    def end_token(self) -> str:
        return self._end_token

    @property
    def gmask_token_id(self) -> int:
        return self._convert_token_to_id(self._gmask_token)

    @property
    def end_token_id(self) -> int:
        return self._convert_token_to_id(self._end_token)

    # -- encoding ---------------------------------------------------------------------
    def preprocess_text(self, text: str) -> str:
        if self.remove_space:
            text = " ".join(text.strip().split())
        return text.lower() if self.do_lower_case else text

    def tokenize(self, text: str, **kwargs: Any) -> list[str]:
        """Pieces of ``text``: special tokens kept whole (spaces around them dropped), every
        other segment through :meth:`_tokenize`."""
        parts = self._special_split.split(text)
        for i in range(1, len(parts), 2):  # special tokens: strip their neighbours
            parts[i - 1] = parts[i - 1].rstrip()
            if i + 1 < len(parts):
                parts[i + 1] = parts[i + 1].lstrip()
        pieces: list[str] = []
        for i, part in enumerate(parts):
            if i % 2:
                pieces.append(part)
            elif part:
                pieces.extend(self._tokenize(part))
        return pieces

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        text = encode_whitespaces(self.preprocess_text(text), self.max_blank_length)
        return self.sp.encode_as_pieces(text)

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """``prompt + [gMASK] + <sop>`` (and ``+ answer + <eop>`` for a pair)."""
        ids = token_ids_0 + [self.gmask_token_id, self.bos_token_id]
        if token_ids_1 is not None:
            ids = ids + token_ids_1 + [self.eos_token_id]
        return ids

    def get_special_tokens_mask(
        self,
        token_ids_0: list[int],
        token_ids_1: list[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        if already_has_special_tokens:
            special = set(self.all_special_ids) | {self.gmask_token_id}
            return [int(t in special) for t in token_ids_0]
        mask = [0] * len(token_ids_0) + [1, 1]
        return mask if token_ids_1 is None else mask + [0] * len(token_ids_1) + [1]

    # -- decoding ---------------------------------------------------------------------
    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return decode_whitespaces(self.sp.decode_pieces(tokens), self.max_blank_length)

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        token_ids = [int(t) for t in token_ids if int(t) != self.pad_token_id]
        if not token_ids:
            return ""
        text = self.convert_tokens_to_string(
            self.convert_ids_to_tokens(token_ids, skip_special_tokens)
        )
        clean = (
            self.clean_up_tokenization_spaces
            if clean_up_tokenization_spaces is None
            else clean_up_tokenization_spaces
        )
        return self.clean_up_tokenization(text) if clean else text

    def save_vocabulary(
        self, save_directory: str, filename_prefix: str | None = None
    ) -> tuple[str]:
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        out = (
            os.path.join(save_directory, name) if os.path.isdir(save_directory) else save_directory
        )
        if os.path.abspath(out) != os.path.abspath(self.vocab_file):
            shutil.copyfile(self.vocab_file, out)
        return (out,)
