"""Lumina-mGPT (Alpha-VLLM): text-to-image on the Chameleon backbone, decoded by Meta's VQGAN.

transformers' `ChameleonForConditionalGeneration` loads the checkpoint, but its head sets every
image-token logit to the dtype minimum and it has no VQ decoder (models.md §1.6). So this adapter
runs the backbone (`hf.model`) on a `SlotCache`, applies `lm_head` to the final hidden states itself
(image logits unmasked, as Lumina's own Chameleon copy with `mask_image_logits=False` does), and
decodes with `sjd_batch.models.vqgan`, loaded from Meta's `vqgan.ckpt` + `vqgan.yaml`.

Sequence (Alpha-VLLM/Lumina-mGPT `data/item_processor.py`, `data/convertsation.py`,
`inference_solver.py`; the ids come from the checkpoint's `vocabulary_map`, never hard-coded):

    prompt:    <s> "Generate an image of {W}x{H} according to the following prompt:\\n{caption}"
               <reserved08706>
    generated: <racm3:break> <reserved{8800+h/2}> <reserved{8800+w/2}>      (h, w: latent rows, columns)
               h x (w image codes, <reserved08799>)  <eoss>  <reserved08706>

Every generated token but the codes is forced. The last one, `<reserved08706>` (id 8710), ends the
assistant turn: it is the stop id of `FlexARInferenceSolver.generate`. Image codes are the BPE
tokens named `IMGIMG` + the code's decimal digits spelled A-J + `Z` (code 12 -> `IMGIMGBCZ`); their
ids form one contiguous range, in an order that only the names give (the `bpe2img` map).

CFG follows `LLMImageStartTriggeredUnbatchedClassifierFreeGuidanceLogitsProcessor`: the
unconditional context is the generated tokens from `<racm3:break>` on, with no text, at positions
from 0; logits mix raw. Here an uncond row is an empty prompt (all padding), so the engine's shared
generated tokens are its whole context. Lumina then masks to the image ids and takes image top-k
2000; the engine's order (CFG, grammar mask, temperature, top-k) gives the same law.

A model folder holds the HF checkpoint (`config.json` with `vocabulary_map`, weights, tokenizer
files), Meta's `vqgan.ckpt` and `vqgan.yaml`, and `sjd_batch.json`:
`{"family": "lumina-mgpt", "resolution": 768}`. `build_tiny_lumina` writes a random one for tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from sjd_batch.decoding.protocol import Layout, Prefix, Window
from sjd_batch.decoding.sampling import SamplingConfig
from sjd_batch.models.hf_causal import SlotCache, new_slot_cache
from sjd_batch.models.llama_t2i import left_pad
from sjd_batch.models.vqgan import (
    TINY_CONFIG,
    VQGAN,
    load_vqgan,
    random_vqgan,
    save_vqgan,
    to_uint8,
)

NAME = "lumina-mgpt"
MANIFEST = "sjd_batch.json"
LOAD_OPTIONS = ("resolution", "vqgan")
DEFAULT_RESOLUTION = 768
DECODE_CHUNK = 4  # images per VQGAN decoder call
PROMPT = "Generate an image of {width}x{height} according to the following prompt:\n{caption}"
# The authors' sampling (inference_solver.py create_logits_processor, models.md §1.1).
LUMINA_SAMPLING = SamplingConfig(temperature=1.0, top_k=2000, top_p=1.0, cfg_scale=3.0, cfg_mode="raw")

IMAGE_START, IMAGE_END = "<racm3:break>", "<eoss>"
NEW_LINE, TURN_END = "<reserved08799>", "<reserved08706>"
IMAGE_PREFIX, IMAGE_SUFFIX = "IMGIMG", "Z"
_DIGIT_LETTERS = "ABCDEFGHIJ"

_EXAMPLE_PROMPTS = (
    "a red apple on a wooden table",
    "a lighthouse on a cliff at sunset",
    "a small blue bird on a branch",
    "an old stone bridge over a river in autumn",
    "a cat sleeping on a windowsill",
    "a bowl of ramen, studio photo",
)


def grid_token(cells: int) -> str:
    """The size token for `cells` patches of 32 px (two latent cells), e.g. 24 -> `<reserved08824>`."""
    return f"<reserved{8800 + cells:05d}>"


def image_token_name(code: int) -> str:
    """BPE name of VQ code `code` in Chameleon's vocabulary (12 -> `IMGIMGBCZ`)."""
    return IMAGE_PREFIX + "".join(_DIGIT_LETTERS[int(d)] for d in str(code)) + IMAGE_SUFFIX


def _code_of_name(name: str) -> int | None:
    body = name[len(IMAGE_PREFIX) : -len(IMAGE_SUFFIX)]
    if not name.startswith(IMAGE_PREFIX) or not name.endswith(IMAGE_SUFFIX) or not body:
        return None
    if any(c not in _DIGIT_LETTERS for c in body):
        return None
    return int("".join(str(_DIGIT_LETTERS.index(c)) for c in body))


@dataclass(frozen=True)
class ChameleonTokens:
    """The ids this family needs, looked up by name in the checkpoint's `vocabulary_map`.

    Attributes:
        vocab: name -> id, the whole map (size tokens are looked up on demand).
        image_start, image_end, new_line, turn_end: `<racm3:break>`, `<eoss>`, EOL, end of turn.
        code_start, code_end: the image ids form exactly [code_start, code_end).
        code_of_id: [code_end - code_start] long: VQ code of image id `code_start + i` (bpe2img).
    """

    vocab: Mapping[str, int]
    image_start: int
    image_end: int
    new_line: int
    turn_end: int
    code_start: int
    code_end: int
    code_of_id: torch.Tensor

    @classmethod
    def from_vocabulary_map(cls, vocab: Mapping[str, int], num_codes: int, where: str) -> ChameleonTokens:
        """Raises ValueError naming `where` when a name is missing or the image ids are not codes 0..n-1."""
        special = {n: _lookup(vocab, n, where) for n in (IMAGE_START, IMAGE_END, NEW_LINE, TURN_END)}
        images = {i: c for n, i in vocab.items() if (c := _code_of_name(n)) is not None}
        if not images:
            raise ValueError(
                f"{where}: vocabulary_map has no image tokens named {IMAGE_PREFIX}...{IMAGE_SUFFIX}"
            )
        lo, hi = min(images), max(images) + 1
        if hi - lo != len(images) or sorted(images.values()) != list(range(num_codes)):
            raise ValueError(
                f"{where}: the {len(images)} {IMAGE_PREFIX}* tokens must be one contiguous id range holding "
                f"codes 0..{num_codes - 1} of the VQGAN codebook (n_embed={num_codes}); got ids "
                f"[{lo}, {hi}) and codes [{min(images.values())}, {max(images.values())}]"
            )
        code_of_id = torch.tensor([images[i] for i in range(lo, hi)], dtype=torch.long)
        return cls(
            vocab,
            special[IMAGE_START],
            special[IMAGE_END],
            special[NEW_LINE],
            special[TURN_END],
            lo,
            hi,
            code_of_id,
        )

    def grid(self, cells: int, where: str) -> int:
        return _lookup(self.vocab, grid_token(cells), where)


def _lookup(vocab: Mapping[str, int], name: str, where: str) -> int:
    if name not in vocab:
        raise ValueError(f"{where}: vocabulary_map has no token {name!r}, which the Lumina-mGPT layout needs")
    return int(vocab[name])


def lumina_layout(tokens: ChameleonTokens, rows: int, cols: int, where: str) -> Layout:
    """Header, `rows` x (`cols` codes + EOL), `<eoss>`, end of turn: all forced but the codes."""
    header = [tokens.image_start, tokens.grid(rows // 2, where), tokens.grid(cols // 2, where)]
    body = ([-1] * cols + [tokens.new_line]) * rows
    forced = (*header, *body, tokens.image_end, tokens.turn_end)
    return Layout(rows, cols, forced, tokens.code_start, tokens.code_end, row_stride=cols + 1)


class LuminaMGPT:
    """`ImageTokenModel` over a transformers Chameleon checkpoint and Meta's VQGAN decoder."""

    def __init__(
        self,
        name: str,
        hf: torch.nn.Module,
        tokenizer: Any,
        vqgan: VQGAN,
        height: int,
        width: int,
        default_sampling: SamplingConfig = LUMINA_SAMPLING,
    ) -> None:
        where = f"model {name}"
        self.name = name
        self.hf = hf.eval()
        self.tokenizer = tokenizer
        self.vqgan = vqgan.eval()
        self.height, self.width = height, width
        self.tokens = ChameleonTokens.from_vocabulary_map(
            hf.config.vocabulary_map, vqgan.config.n_embed, where
        )
        rows, cols = _latent_grid(height, width, vqgan.config.downsample, where)
        self.layout = lumina_layout(self.tokens, rows, cols, where)
        self.vocab_size = hf.config.vocab_size
        self.default_sampling = default_sampling
        self.has_uncond = True
        self.bos_id = _special_id(tokenizer, "bos_token", where)
        param = next(hf.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._code_of_id = self.tokens.code_of_id.to(self.device)

    def example_prompts(self, count: int, seed: int = 0) -> list[str]:
        """`count` captions for benchmarks; deterministic in `seed`."""
        return [_EXAMPLE_PROMPTS[(seed + i) % len(_EXAMPLE_PROMPTS)] for i in range(count)]

    def prompt_ids(self, caption: str) -> list[int]:
        """BOS, the templated human turn, then the end-of-turn token (the assistant answers next)."""
        text = PROMPT.format(width=self.width, height=self.height, caption=caption)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return [self.bos_id, *ids, self.tokens.turn_end]

    def encode(
        self, prompts: Sequence[str], negative_prompts: Sequence[str | None] | None, with_uncond: bool
    ) -> Prefix:
        """B templated prompts; with CFG, B empty uncond rows (the image tokens are their only context)."""
        if negative_prompts is not None and any(negative_prompts):
            raise ValueError(
                f"{self.name}: negative prompts are not supported; Lumina-mGPT's unconditional context is "
                "the image tokens alone (no text). Drop the negative_prompt column or use cfg_scale=1"
            )
        rows = [self.prompt_ids(p) for p in prompts]
        if with_uncond:
            rows += [[] for _ in prompts]
        return left_pad(rows, self.device)  # pad id 0; padded slots are never visible

    def new_cache(self, rows: int, slots: int) -> SlotCache:
        return new_slot_cache(self.hf, rows, slots)

    @torch.no_grad()  # not inference_mode: see hf_causal.forward_window
    def forward(self, cache: SlotCache, ids: torch.Tensor, window: Window) -> torch.Tensor:
        """Backbone on the slot cache, then `lm_head` on the hidden states: no image-logit mask."""
        cache.begin(window.slots)
        hidden = self.hf.model(
            input_ids=ids,
            position_ids=window.positions,
            attention_mask=window.visible,
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state
        if not window.generated:
            hidden = hidden[:, -1:]  # only the law of offset 0 is read after a prefill
        return self.hf.lm_head(hidden)

    def codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Generated tokens [B, T] -> VQ codes [B, h, w]: drop the header and EOL column, apply bpe2img."""
        if tokens.ndim != 2 or tokens.shape[1] != self.layout.length:
            raise ValueError(
                f"{self.name}: expected tokens [B, {self.layout.length}], got {tuple(tokens.shape)}"
            )
        offsets = torch.tensor(self.layout.code_offsets(), device=tokens.device)
        ids = tokens.index_select(1, offsets)
        inside = (ids >= self.tokens.code_start) & (ids < self.tokens.code_end)
        if not bool(inside.all()):
            raise ValueError(
                f"{self.name}: a code slot holds a non-image id; tokens do not follow the layout"
            )
        codes = self._code_of_id.to(tokens.device)[ids - self.tokens.code_start]
        return codes.view(-1, self.layout.height, self.layout.width)

    def decode_pixels(self, tokens: torch.Tensor) -> torch.Tensor:
        """Generated tokens [B, T] -> uint8 [B, height, width, 3] through the VQGAN decoder.

        Decodes DECODE_CHUNK images at a time: at 768 px the fp32 decoder's activations take about a
        gigabyte per image, so a whole batch at once could exceed what the freed KV cache left.
        """
        codes = self.codes(tokens.to(self.vqgan.post_quant_conv.weight.device))
        return torch.cat([to_uint8(self.vqgan.decode_codes(c)) for c in codes.split(DECODE_CHUNK)])


def _latent_grid(height: int, width: int, downsample: int, where: str) -> tuple[int, int]:
    """Latent rows and columns; each must be even, since the size tokens count 2-cell patches."""
    step = 2 * downsample
    if height < step or width < step or height % step or width % step:
        raise ValueError(
            f"{where}: resolution {width}x{height} must be a positive multiple of {step} px on each side "
            f"(the VQGAN downsamples by {downsample} and the size tokens count patches of 2 latent cells)"
        )
    return height // downsample, width // downsample


def _special_id(tokenizer: Any, attr: str, where: str) -> int:
    token_id = getattr(tokenizer, f"{attr}_id", None)
    if token_id is None:
        raise ValueError(
            f"{where}: the tokenizer has no {attr}; the checkpoint's tokenizer files are incomplete"
        )
    return int(token_id)


def parse_resolution(value: Any) -> tuple[int, int]:
    """`768` -> (768, 768); `"1024x512"` (width x height) -> (512, 1024) as (height, width)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, str) and "x" in value:
        w, _, h = value.partition("x")
        if w.strip().isdigit() and h.strip().isdigit():
            return int(h), int(w)
    raise ValueError(
        f"option resolution: expected pixels (768) or 'WIDTHxHEIGHT' ('1024x512'), got {value!r}"
    )


def load(
    source: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, **options: Any
) -> LuminaMGPT:
    """Load a Lumina-mGPT checkpoint folder (or hub id) with Meta's VQGAN.

    Options (from the folder's `sjd_batch.json` or a job's `model.options`):
        resolution: pixels of a square image (768 by default; 512 and 1024 for those checkpoints), or
            "WIDTHxHEIGHT".
        vqgan: a folder holding `vqgan.ckpt` and `vqgan.yaml` (default: the model folder itself; required
            for a hub id, since the Lumina-mGPT repos do not ship Meta's tokenizer).

    The VQGAN stays in float32 whatever `dtype` the language model uses.

    Raises:
        ValueError: an unknown option, a bad resolution, a missing or incomplete folder, or a checkpoint
            that is not a Chameleon with a `vocabulary_map`, naming the source.
        FileNotFoundError: a missing `vqgan.ckpt` or `vqgan.yaml`.
    """
    from transformers import AutoTokenizer, ChameleonForConditionalGeneration

    unknown = sorted(set(options) - set(LOAD_OPTIONS))
    if unknown:
        raise ValueError(f"{NAME} model {source}: unknown option(s) {unknown}; allowed: {list(LOAD_OPTIONS)}")
    height, width = parse_resolution(options.get("resolution", DEFAULT_RESOLUTION))
    location, folder = _location(str(source))
    vq_folder = Path(options["vqgan"]).expanduser() if options.get("vqgan") else folder
    if vq_folder is None:
        raise ValueError(
            f"{NAME} model {source}: a hub id needs the option vqgan=<folder with Meta's vqgan.ckpt and "
            "vqgan.yaml>; the Lumina-mGPT hub repos do not ship the image tokenizer"
        )
    vqgan = load_vqgan(vq_folder, device=device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        hf = ChameleonForConditionalGeneration.from_pretrained(
            location, dtype=dtype, attn_implementation="sdpa"
        )
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{NAME} model {source}: could not load the Chameleon checkpoint and tokenizer: {e}"
        ) from e
    if not getattr(hf.config, "vocabulary_map", None):
        raise ValueError(
            f"{NAME} model {source}: config.json has no vocabulary_map (a converted Chameleon has one)"
        )
    name = folder.name if folder is not None else location
    return LuminaMGPT(name, hf.to(torch.device(device)), tokenizer, vqgan, height, width)


def _location(source: str) -> tuple[str, Path | None]:
    """(what from_pretrained reads, the local folder or None for a hub id)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{NAME} model folder {path} has no config.json; expected an HF Chameleon checkpoint"
            )
        return str(path), path
    owner, sep, repo = source.partition("/")
    if sep and owner and repo and "/" not in repo and not source.startswith((".", "~")):
        return source, None
    raise ValueError(
        f"{NAME} model {source}: no such folder; give a local checkpoint folder or a hub id such as "
        "Alpha-VLLM/Lumina-mGPT-7B-768"
    )


# --- a tiny random model folder, for the CPU tests (models.md §3) -------------------------------------

_TINY_WORDS = (
    "generate an image of according to the following prompt : a the red blue green yellow circle square "
    "cross triangle at top bottom left right and two small large"
).split()


def tiny_vocabulary(num_codes: int, seed: int = 0) -> dict[str, int]:
    """A Chameleon-shaped vocabulary map: specials, the image names in a shuffled (but contiguous) id
    range, the layout tokens, size tokens for 1..8 patches, then words."""
    order = torch.randperm(num_codes, generator=torch.Generator().manual_seed(seed)).tolist()
    names = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
    names += [image_token_name(c) for c in order]  # id order != code order, as bpe2img allows
    names += [IMAGE_END, IMAGE_START, TURN_END, NEW_LINE] + [grid_token(n) for n in range(1, 9)]
    names += list(_TINY_WORDS)
    return {n: i for i, n in enumerate(names)}


def build_tiny_lumina(folder: str | Path, resolution: int = 16, seed: int = 0) -> Path:
    """Write a seeded random Lumina-mGPT folder that `load` reads like a real one.

    It holds a 2-layer `ChameleonForConditionalGeneration` (`save_pretrained`), a word-level tokenizer
    over the same vocabulary, a random VQGAN saved as Meta's `vqgan.ckpt` + `vqgan.yaml` (whose encoder
    also becomes the checkpoint's `model.vqmodel`, as transformers' conversion script does), and
    `sjd_batch.json`. With the default 16 px the VQGAN (f = 2) gives an 8x8 grid: 3 + 8*9 + 2 = 77 tokens.
    """
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocabulary(TINY_CONFIG.n_embed, seed)
    vqgan = random_vqgan(TINY_CONFIG, seed)
    config = ChameleonConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        vocabulary_map=vocab,
        vq_config=TINY_CONFIG.transformers_config(),
        # 10x the default init: at 0.02 a 2-layer model's greedy output repeats one code, which would
        # make "greedy SJD equals greedy AR" hold trivially.
        initializer_range=0.2,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # weights are a pure function of the seed
    hf = ChameleonForConditionalGeneration(config).eval()
    torch.random.set_rng_state(generator_state)
    encoder_side = {k: v for k, v in vqgan.state_dict().items() if not k.startswith("decoder.")}
    hf.model.vqmodel.load_state_dict(encoder_side, strict=True)
    hf.save_pretrained(folder)
    _tiny_tokenizer(vocab).save_pretrained(folder)
    save_vqgan(vqgan, folder)
    (folder / MANIFEST).write_text(json.dumps({"family": NAME, "resolution": resolution}) + "\n")
    return folder


def _tiny_tokenizer(vocab: dict[str, int]) -> Any:
    """A lower-casing word-level fast tokenizer over `vocab`; unknown words become `<unk>`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
