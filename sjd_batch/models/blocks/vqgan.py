"""The Chameleon VQGAN (a taming-transformers `VQModel`), loaded from Meta's `vqgan.ckpt` + `vqgan.yaml`.

transformers' `ChameleonVQVAE` only encodes; Lumina-mGPT and Anole decode their image tokens with
Meta's taming-style VQGAN. This module rebuilds that network so that the parameter names are
exactly the keys of the official checkpoint (a torch file whose `"state_dict"` holds `encoder.*`,
`decoder.*`, `quantize.embedding.weight`, `quant_conv.*`, `post_quant_conv.*`), and reads the
architecture from the `ddconfig` of Meta's `vqgan.yaml` (`model.params`).

Structure learned from CompVis/taming-transformers `taming/modules/diffusionmodules/model.py`
(Encoder, Decoder, ResnetBlock, AttnBlock, Up/Downsample), `taming/models/vqgan.py` (VQModel) and
facebookresearch/chameleon `chameleon/inference/vqgan.py`, `image_tokenizer.py` (the inference-only
copy and its pixel mapping); the code here is our own. The decoder is required, the encoder is
optional (built only when asked for: generation never needs it).

Here: the codebook `Quantizer`, the `VQGAN` inference model, `to_uint8`, and checkpoint IO
(`load_vqgan`, `read_state_dict`, `save_vqgan`). `VQGANConfig` (read from and written as `vqgan.yaml`)
is in `vqgan_config.py`, the encoder and decoder stacks and their blocks in `vqgan_blocks.py`, the test
fixtures' tiny config and random VQGAN in `tiny_vqgan.py`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from torch import nn

from sjd_batch.models.blocks.vqgan_blocks import Decoder, Encoder
from sjd_batch.models.blocks.vqgan_config import VQGANConfig

CKPT = "vqgan.ckpt"
YAML = "vqgan.yaml"
# Keys a training checkpoint may carry that inference never reads (taming's VQLPIPSWithDiscriminator).
TRAINING_ONLY_PREFIXES = ("loss.",)


class Quantizer(nn.Module):
    """The codebook (`quantize.embedding.weight`, [n_embed, embed_dim]): nearest-code lookup both ways."""

    def __init__(self, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, h, w] long -> z_q [B, embed_dim, h, w]."""
        return self.embedding(codes).permute(0, 3, 1, 2)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, embed_dim, h, w] -> codes [B, h, w] of the nearest codebook entries (L2)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        dist = torch.cdist(flat.float(), self.embedding.weight.float())
        return dist.argmin(-1).view(b, h, w)


class VQGAN(nn.Module):
    """Taming VQModel for inference: `decode_codes` always, `encode_codes` when built with the encoder."""

    def __init__(self, cfg: VQGANConfig, with_encoder: bool = False) -> None:
        super().__init__()
        self.config = cfg
        if with_encoder:
            self.encoder = Encoder(cfg)
            self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.decoder = Decoder(cfg)
        self.quantize = Quantizer(cfg.n_embed, cfg.embed_dim)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    @property
    def has_encoder(self) -> bool:
        return hasattr(self, "encoder")

    @torch.inference_mode()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, h, w] long in [0, n_embed) -> pixels [B, out_ch, h*f, w*f] (float, ~[-1, 1])."""
        if codes.ndim != 3:
            raise ValueError(f"decode_codes expects codes [B, h, w], got shape {tuple(codes.shape)}")
        if codes.numel() and not 0 <= int(codes.min()) <= int(codes.max()) < self.config.n_embed:
            low, high = int(codes.min()), int(codes.max())
            raise ValueError(f"codes must lie in [0, {self.config.n_embed}), got [{low}, {high}]")
        return self.decoder(self.post_quant_conv(self.quantize.lookup(codes)))

    @torch.inference_mode()
    def encode_codes(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, in_ch, H, W] in [-1, 1] -> codes [B, H/f, W/f]."""
        if not self.has_encoder:
            raise ValueError("this VQGAN was loaded without its encoder; load it with with_encoder=True")
        return self.quantize.nearest(self.quant_conv(self.encoder(pixels)))


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Decoder output [B, 3, H, W] in ~[-1, 1] -> uint8 [B, H, W, 3].

    Clamps, maps [-1, 1] to [0, 255] and truncates, as chameleon `_pil_from_chw_tensor` does.
    """
    unit = (pixels.float().clamp(-1.0, 1.0) + 1.0) / 2.0
    return (unit * 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def load_vqgan(
    folder: Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    with_encoder: bool = False,
) -> VQGAN:
    """Build the VQGAN from `folder/vqgan.yaml` and load `folder/vqgan.ckpt` strictly.

    Every checkpoint key must be used (training-only `loss.*` keys, and `encoder.*`/`quant_conv.*`
    when the encoder is not built, are dropped) and every parameter must be present with its shape.

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: naming a missing, unexpected or mis-shaped key, or a bad yaml.
    """
    folder = Path(folder)
    for name in (YAML, CKPT):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} is missing; the model folder needs Meta's Chameleon tokenizer files "
                f"{YAML} and {CKPT}"
            )
    model = VQGAN(VQGANConfig.from_yaml(folder / YAML), with_encoder=with_encoder)
    state = read_state_dict(folder / CKPT)
    model.load_state_dict(_checked(state, model, folder / CKPT))
    return model.to(device=device, dtype=dtype).eval()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The `"state_dict"` of a taming/Lightning checkpoint (tensors only; no pickled code runs)."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"{path}: not a loadable torch checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("state_dict"), dict):
        raise ValueError(f"{path}: expected a dict with a 'state_dict' entry (taming VQModel checkpoint)")
    return raw["state_dict"]


def _checked(state: dict[str, torch.Tensor], model: VQGAN, path: Path) -> dict[str, torch.Tensor]:
    dropped = TRAINING_ONLY_PREFIXES + (() if model.has_encoder else ("encoder.", "quant_conv."))
    used = {k: v for k, v in state.items() if not k.startswith(dropped)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(used))
    unexpected = sorted(set(used) - set(expected))
    if missing:
        raise ValueError(f"{path}: missing key(s) {_few(missing)} for the config in {YAML}")
    if unexpected:
        raise ValueError(
            f"{path}: unexpected key(s) {_few(unexpected)} (not in a taming VQModel of this config)"
        )
    for key, tensor in used.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{path}: key {key} has shape {tuple(tensor.shape)}, the config in {YAML} expects "
                f"{tuple(expected[key].shape)}"
            )
    return used


def _few(keys: list[str], limit: int = 5) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def save_vqgan(model: VQGAN, folder: Path, extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write `vqgan.yaml` and `vqgan.ckpt` in Meta's layout (`{"state_dict": ...}` of taming keys).

    `extra` adds raw entries to the state dict (tests use it to plant unexpected keys).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / YAML).write_text(yaml.safe_dump(model.config.to_yaml(), sort_keys=False))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({"state_dict": {**state, **(extra or {})}}, folder / CKPT)
