"""The CLIP tokenizer SD1.x uses, built offline from the BPE vocabulary open_clip ships.

``open_clip`` (a WebUI dependency) carries ``bpe_simple_vocab_16e6.txt.gz``, the same byte-pair
vocabulary as OpenAI's CLIP; written out as ``vocab.json`` + ``merges.txt`` it gives a
``transformers.CLIPTokenizer`` with ids identical to the hub's ``openai/clip-vit-large-patch14``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

from lib_profile.hosts.base import HostError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def find_bpe() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise HostError("The CLIP vocabulary comes from the open_clip package (open-clip-torch), which is not "
                        "installed: pip install open-clip-torch")
    path = Path(list(spec.submodule_search_locations)[0]) / BPE_FILE
    if not path.is_file():
        raise HostError(f"open_clip is installed but lacks {BPE_FILE}; reinstall open-clip-torch")
    return path


def write_tokenizer_files(folder: Path) -> Path:
    """Write vocab.json, merges.txt and the tokenizer configs into ``folder`` (idempotent). Each call writes into
    a folder of its own first and moves the files in whole, so processes sharing ``folder`` (a cluster's data
    folder, several ``serve`` starting at once) never see or remove each other's half-written files."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return folder
    lines = gzip.open(find_bpe()).read().decode("utf-8").split("\n")[1:N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder))
    (tmp / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False), "utf-8")
    (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", "utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (tmp / "special_tokens_map.json").write_text(json.dumps(special), "utf-8")
    (tmp / "tokenizer_config.json").write_text(json.dumps({**special, "model_max_length": 77,
                                                           "do_lower_case": True,
                                                           "tokenizer_class": "CLIPTokenizer"}), "utf-8")
    for f in tmp.iterdir():
        f.replace(folder / f.name)
    tmp.rmdir()
    return folder


#: one first load at a time: a request thread and the job worker both asking for the tokenizer first would import
#: ``transformers`` side by side, and Python 3.11's concurrent first import of it fails in one of them ("cannot
#: import name 'CLIPTokenizer' from 'transformers'"; seen with an edit queued while a restyle job started)
_LOADING = threading.Lock()


def load_tokenizer(folder: str):
    """SD1.x's CLIP tokenizer from ``folder`` (written there first when missing); one per folder."""
    with _LOADING:
        return _load(folder, None)


def load_tokenizer_2(folder: str):
    """SDXL's second tokenizer (OpenCLIP bigG's): the same vocabulary, padding with ``!`` (id 0) after the end token,
    as diffusers' ``tokenizer_2`` and the WebUI's ``FrozenOpenCLIPEmbedder2WithCustomWords`` (``id_pad = 0``) do."""
    with _LOADING:
        return _load(folder, "!")


@lru_cache(maxsize=8)
def _load(folder: str, pad_token):
    from transformers import CLIPTokenizer

    write_tokenizer_files(Path(folder))
    extra = {} if pad_token is None else {"pad_token": pad_token}
    return CLIPTokenizer.from_pretrained(folder, local_files_only=True, **extra)
