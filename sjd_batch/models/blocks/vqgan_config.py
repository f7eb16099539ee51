"""`VQGANConfig`: the sizes of a taming-style VQGAN (Meta's `vqgan.yaml` layout), read and written.

Its own module so that the model (`vqgan.py`) and its blocks (`vqgan_blocks.py`) both import it and not
each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class VQGANConfig:
    """The `ddconfig` plus codebook shape of a taming VQModel (names as in `vqgan.yaml`)."""

    embed_dim: int = 256
    n_embed: int = 8192
    z_channels: int = 256
    resolution: int = 512
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    double_z: bool = False

    def __post_init__(self) -> None:
        for name in ("ch", "embed_dim", "n_embed", "z_channels", "num_res_blocks", "resolution"):
            if getattr(self, name) < 1:
                raise ValueError(f"VQGAN config: {name} must be >= 1, got {getattr(self, name)}")
        if not self.ch_mult:
            raise ValueError("VQGAN config: ch_mult is empty")
        widths = [self.ch * m for m in self.ch_mult]
        if any(w % 32 for w in widths):  # GroupNorm(32) everywhere, as in taming
            raise ValueError(f"VQGAN config: ch * ch_mult = {widths} must all be multiples of 32")

    @property
    def downsample(self) -> int:
        """Pixels per latent cell along each axis (16 for Chameleon's five levels)."""
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def from_yaml(cls, path: Path) -> VQGANConfig:
        """Read Meta's `vqgan.yaml` (`model.params.{embed_dim, n_embed, ddconfig}`)."""
        raw = yaml.safe_load(Path(path).read_text())
        try:
            params = raw["model"]["params"]
            dd = params["ddconfig"]
            fields_ = {"embed_dim": params["embed_dim"], "n_embed": params["n_embed"]}
            for key in ("z_channels", "resolution", "in_channels", "out_ch", "ch", "num_res_blocks"):
                fields_[key] = int(dd[key])
        except (KeyError, TypeError) as err:
            raise ValueError(
                f"{path}: expected Meta's vqgan.yaml layout with model.params.embed_dim, n_embed and "
                f"ddconfig.(z_channels, resolution, in_channels, out_ch, ch, ch_mult, num_res_blocks); "
                f"missing {err}"
            ) from None
        if not dd.get("resamp_with_conv", True):
            raise ValueError(f"{path}: ddconfig.resamp_with_conv=false is not supported")
        return cls(
            **fields_,
            ch_mult=tuple(int(m) for m in dd.get("ch_mult", ())),
            attn_resolutions=tuple(int(r) for r in dd.get("attn_resolutions") or ()),
            double_z=bool(dd.get("double_z", False)),
        )

    def to_yaml(self) -> dict[str, Any]:
        """The `vqgan.yaml` document for this config, in Meta's layout."""
        dd = {
            "double_z": self.double_z,
            "z_channels": self.z_channels,
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "out_ch": self.out_ch,
            "ch": self.ch,
            "ch_mult": list(self.ch_mult),
            "num_res_blocks": self.num_res_blocks,
            "attn_resolutions": list(self.attn_resolutions),
            "dropout": 0.0,
        }
        params = {"embed_dim": self.embed_dim, "n_embed": self.n_embed, "ddconfig": dd}
        return {"model": {"target": "taming.models.vqgan.VQModel", "params": params}}

    def transformers_config(self) -> dict[str, Any]:
        """The same VQGAN as `ChameleonVQVAEConfig` kwargs (the renames of transformers'
        convert_chameleon_weights_to_hf.py), for a Chameleon checkpoint's `vq_config`."""
        return {
            "embed_dim": self.embed_dim,
            "num_embeddings": self.n_embed,
            "latent_channels": self.z_channels,
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "base_channels": self.ch,
            "channel_multiplier": list(self.ch_mult),
            "num_res_blocks": self.num_res_blocks,
            "attn_resolutions": list(self.attn_resolutions),
            "double_latent": self.double_z,
        }
