"""A tiny random-weight `llama` model in GGUF, for running a real llama-server in tests.

Key names, tensor names, enum values and the file constants come from the gguf-py folder vendored in the
same llama.cpp sdist the server is built from, so they match what that server reads. gguf-py's writer
needs numpy, which the project does not otherwise depend on; the GGUF v3 layout itself is a few packed
integers, so the bytes are written here with the standard library.

The model only ever emits printable ASCII (never EOS, bytes outside 0x20-0x7e or special tokens): every
completion runs to `max_tokens` (finish_reason "length") and stream chunks are whole UTF-8 text.

`n_layer=SLOW_LOAD_LAYERS` gives the same model with many more blocks, for a test that needs the server to
take a while to load (/health answers 503 meanwhile); those extra blocks repeat the weights of the first
N_LAYER ones, so the file is written in well under a second.
"""

from __future__ import annotations

import importlib.util
import random
import struct
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

ARCH = "llama"
N_LAYER = 2
N_EMBD = 64
N_HEAD = 4
N_FF = 128
# llama-server's load time grows with the block count: with this many blocks (85 MB, written in ~0.2 s)
# /health answers 503 for ~1.1 s on a 2-core VM (185 polls 5 ms apart), against ~10 ms for N_LAYER blocks.
SLOW_LOAD_LAYERS = 512
# The server's default -c is read from here; tests pass their own, this only has to cover it.
CONTEXT_LENGTH = 4096

# ChatML: llama.cpp's Jinja engine renders it and the <|im_*|> tokens below are its markers.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# A few byte-level BPE merges (GPT-2 spelling, "Ġ" is a space) so the tokenizer merges as well as splits.
MERGES = (
    "Ġ t", "h e", "Ġt he", "i n", "e r", "a n", "o n", "r e", "Ġ a", "Ġ s",
    "e n", "a t", "o r", "Ġ w", "e s", "i s", "Ġ h", "l l", "Ġ o", "Ġ i",
)
# Logit penalty for tokens the model must never emit; see _output_rows.
_BANNED_LOGIT = -100.0
# Channel 0 of the residual stream is held at this value so the output layer can rely on its sign.
_BIAS_CHANNEL = 4.0


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]  # numpy order: rows last-to-first of ggml's ne
    data: array[float]


def load_gguf_constants(gguf_py: Path) -> ModuleType:
    """gguf-py's constants.py on its own: the package's __init__ imports numpy, this module does not."""
    path = gguf_py / "gguf" / "constants.py"
    spec = importlib.util.spec_from_file_location("_vendored_gguf_constants", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"gguf-py constants not found at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def byte_level_alphabet() -> list[str]:
    """GPT-2's bytes_to_unicode: byte b is written as the returned list's b-th character."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    alphabet, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            alphabet.append(chr(byte))
        else:
            alphabet.append(chr(256 + shifted))
            shifted += 1
    return alphabet


def vocabulary() -> tuple[list[str], list[str]]:
    """(tokens, merges): the 256 byte tokens, one token per merge, then the special tokens."""
    tokens = byte_level_alphabet()
    for merge in MERGES:
        left, right = merge.split(" ")
        assert left in tokens and right in tokens, merge
        tokens.append(left + right)
    return tokens + list(SPECIAL_TOKENS), list(MERGES)


def write_tiny_model(path: Path, gguf_py: Path, *, seed: int = 0, n_layer: int = N_LAYER) -> Path:
    """Write the model to `path` (same seed and n_layer, same bytes) and return it.

    Blocks past the first N_LAYER reuse their weights in turn (see SLOW_LOAD_LAYERS)."""
    c = load_gguf_constants(gguf_py)
    tokens, merges = vocabulary()
    rng = random.Random(seed)
    keys, llm = c.Keys, c.Keys.LLM
    tok = c.Keys.Tokenizer
    t = c.GGUFValueType
    special = {name: tokens.index(name) for name in SPECIAL_TOKENS}
    token_types = [c.TokenType.CONTROL if s in special else c.TokenType.NORMAL for s in tokens]
    metadata: list[tuple[str, Any, Any]] = [
        (keys.General.ARCHITECTURE, t.STRING, ARCH),
        (keys.General.NAME, t.STRING, "inventiv-tiny"),
        (keys.General.FILE_TYPE, t.UINT32, 0),  # all F32
        (llm.VOCAB_SIZE.format(arch=ARCH), t.UINT32, len(tokens)),
        (llm.CONTEXT_LENGTH.format(arch=ARCH), t.UINT32, CONTEXT_LENGTH),
        (llm.EMBEDDING_LENGTH.format(arch=ARCH), t.UINT32, N_EMBD),
        (llm.BLOCK_COUNT.format(arch=ARCH), t.UINT32, n_layer),
        (llm.FEED_FORWARD_LENGTH.format(arch=ARCH), t.UINT32, N_FF),
        (keys.Attention.HEAD_COUNT.format(arch=ARCH), t.UINT32, N_HEAD),
        (keys.Attention.HEAD_COUNT_KV.format(arch=ARCH), t.UINT32, N_HEAD),
        (keys.Attention.LAYERNORM_RMS_EPS.format(arch=ARCH), t.FLOAT32, 1e-5),
        (keys.Rope.DIMENSION_COUNT.format(arch=ARCH), t.UINT32, N_EMBD // N_HEAD),
        (keys.Rope.FREQ_BASE.format(arch=ARCH), t.FLOAT32, 10000.0),
        (tok.MODEL, t.STRING, "gpt2"),
        (tok.PRE, t.STRING, "default"),
        (tok.LIST, (t.ARRAY, t.STRING), tokens),
        (tok.TOKEN_TYPE, (t.ARRAY, t.INT32), [int(x) for x in token_types]),
        (tok.MERGES, (t.ARRAY, t.STRING), merges),
        (tok.BOS_ID, t.UINT32, special["<|endoftext|>"]),
        (tok.EOS_ID, t.UINT32, special["<|im_end|>"]),
        (tok.EOT_ID, t.UINT32, special["<|im_end|>"]),
        (tok.ADD_BOS, t.BOOL, False),
        (tok.CHAT_TEMPLATE, t.STRING, CHAT_TEMPLATE),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        _write_gguf(out, c, metadata, _tensors(c, rng, tokens, n_layer))
    return path


def _tensors(c: ModuleType, rng: random.Random, tokens: list[str], n_layer: int) -> list[_Tensor]:
    def name(kind: str, block: int | None = None) -> str:
        base: str = c.TENSOR_NAMES[c.MODEL_TENSOR[kind]]
        return (base.format(bid=block) if block is not None else base) + ".weight"

    def ones(n: int) -> array[float]:
        return array("f", [1.0]) * n

    def matrix(rows: int, cols: int, *, keep_bias_channel: bool = False) -> array[float]:
        scale = cols**-0.5
        data = array("f", (rng.gauss(0.0, scale) for _ in range(rows * cols)))
        if keep_bias_channel:  # row 0 writes residual channel 0: zero it so that channel never moves
            data[0:cols] = array("f", [0.0]) * cols
        return data

    vocab = len(tokens)
    embeddings = array("f", (rng.gauss(0.0, 1.0) for _ in range(vocab * N_EMBD)))
    embeddings[0::N_EMBD] = array("f", [_BIAS_CHANNEL]) * vocab
    tensors = [
        _Tensor(name("TOKEN_EMBD"), (vocab, N_EMBD), embeddings),
        _Tensor(name("OUTPUT_NORM"), (N_EMBD,), ones(N_EMBD)),
        _Tensor(name("OUTPUT"), (vocab, N_EMBD), _output_rows(rng, tokens)),
    ]

    def block() -> list[tuple[str, tuple[int, ...], array[float]]]:
        return [
            ("ATTN_NORM", (N_EMBD,), ones(N_EMBD)),
            ("ATTN_Q", (N_EMBD, N_EMBD), matrix(N_EMBD, N_EMBD)),
            ("ATTN_K", (N_EMBD, N_EMBD), matrix(N_EMBD, N_EMBD)),
            ("ATTN_V", (N_EMBD, N_EMBD), matrix(N_EMBD, N_EMBD)),
            ("ATTN_OUT", (N_EMBD, N_EMBD), matrix(N_EMBD, N_EMBD, keep_bias_channel=True)),
            ("FFN_NORM", (N_EMBD,), ones(N_EMBD)),
            ("FFN_GATE", (N_FF, N_EMBD), matrix(N_FF, N_EMBD)),
            ("FFN_UP", (N_FF, N_EMBD), matrix(N_FF, N_EMBD)),
            ("FFN_DOWN", (N_EMBD, N_FF), matrix(N_EMBD, N_FF, keep_bias_channel=True)),
        ]

    # Drawing fresh weights for hundreds of blocks would take seconds: blocks past N_LAYER repeat earlier ones.
    drawn = [block() for _ in range(min(n_layer, N_LAYER))]
    for index in range(n_layer):
        tensors += [_Tensor(name(kind, index), shape, data) for kind, shape, data in drawn[index % len(drawn)]]
    return tensors


def _output_rows(rng: random.Random, tokens: list[str]) -> array[float]:
    """Output projection: random rows for printable tokens, a large negative weight on channel 0 otherwise.

    Channel 0 of the final hidden state is the constant bias channel, positive after the RMS norm, so a
    banned token's logit is about -100 whatever the input while the others stay within a few units of 0.
    """
    byte_of = {char: byte for byte, char in enumerate(byte_level_alphabet())}
    rows = array("f")
    for token in tokens:
        printable = token not in SPECIAL_TOKENS and all(0x20 <= byte_of[ch] <= 0x7E for ch in token)
        if printable:
            rows.append(0.0)
            rows.extend(rng.gauss(0.0, N_EMBD**-0.5) for _ in range(N_EMBD - 1))
        else:
            rows.append(_BANNED_LOGIT / _BIAS_CHANNEL)
            rows.extend([0.0] * (N_EMBD - 1))
    return rows


def _write_gguf(out: BinaryIO, c: ModuleType, metadata: list[tuple[str, Any, Any]], tensors: list[_Tensor]) -> None:
    """GGUF v3, little-endian: header, key/values, tensor infos, then aligned tensor data."""
    align = c.GGUF_DEFAULT_ALIGNMENT
    out.write(struct.pack("<IIQQ", c.GGUF_MAGIC, c.GGUF_VERSION, len(tensors), len(metadata)))
    for key, kind, value in metadata:
        out.write(_string(key))
        if isinstance(kind, tuple):
            array_kind, item_kind = kind
            out.write(struct.pack("<IIQ", array_kind, item_kind, len(value)))
            out.write(b"".join(_scalar(c, item_kind, item) for item in value))
        else:
            out.write(struct.pack("<I", kind) + _scalar(c, kind, value))
    offset = 0
    for tensor in tensors:
        ne = tensor.shape[::-1]  # ggml lists the fastest-moving dimension first
        info = struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, c.GGMLQuantizationType.F32, offset)
        out.write(_string(tensor.name) + info)
        offset += _padded(len(tensor.data) * 4, align)
    out.write(b"\0" * (_padded(out.tell(), align) - out.tell()))
    for tensor in tensors:
        raw = _little_endian(tensor.data)
        out.write(raw + b"\0" * (_padded(len(raw), align) - len(raw)))


def _scalar(c: ModuleType, kind: int, value: Any) -> bytes:
    t = c.GGUFValueType
    formats = {t.UINT32: "<I", t.INT32: "<i", t.FLOAT32: "<f", t.BOOL: "<?"}
    if kind == t.STRING:
        return _string(value)
    return struct.pack(formats[kind], value)


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _little_endian(values: Iterable[float]) -> bytes:
    data = array("f", values)
    if struct.pack("=I", 1) != struct.pack("<I", 1):
        data.byteswap()
    return data.tobytes()


def _padded(n: int, align: int) -> int:
    return (n + align - 1) // align * align
