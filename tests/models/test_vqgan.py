"""The Chameleon VQGAN: Meta's checkpoint layout, strict loading, decode shapes, and the encoder checked
against transformers' own `ChameleonVQVAE` on the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from transformers import ChameleonVQVAEConfig
from transformers.models.chameleon.modeling_chameleon import ChameleonVQVAE

from sjd_batch.models.blocks.tiny_vqgan import TINY_CONFIG, random_vqgan
from sjd_batch.models.blocks.vqgan import (
    CKPT,
    YAML,
    VQGANConfig,
    load_vqgan,
    save_vqgan,
    to_uint8,
)

# Parameter names of a taming VQModel (CompVis/taming-transformers taming/models/vqgan.py) for the tiny
# config: two levels, one res block per encoder level (two per decoder level), attention at 16 px.
TAMING_KEYS = (
    "encoder.conv_in.weight",
    "encoder.down.0.block.0.conv1.weight",
    "encoder.down.0.downsample.conv.weight",
    "encoder.down.1.block.0.nin_shortcut.weight",
    "encoder.down.1.attn.0.q.weight",
    "encoder.mid.attn_1.proj_out.weight",
    "encoder.norm_out.weight",
    "decoder.conv_in.weight",
    "decoder.mid.block_1.norm1.weight",
    "decoder.mid.attn_1.k.weight",
    "decoder.mid.block_2.conv2.bias",
    "decoder.up.0.block.0.nin_shortcut.weight",
    "decoder.up.0.block.1.norm2.bias",
    "decoder.up.1.block.1.conv1.weight",
    "decoder.up.1.attn.1.v.weight",
    "decoder.up.1.upsample.conv.weight",
    "decoder.norm_out.weight",
    "decoder.conv_out.weight",
    "quantize.embedding.weight",
    "quant_conv.weight",
    "post_quant_conv.weight",
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vqgan")
    save_vqgan(random_vqgan(TINY_CONFIG, seed=3), folder)
    return folder


def _codes(batch: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, TINY_CONFIG.n_embed, (batch, h, w), generator=torch.Generator().manual_seed(seed))


def _rewrite(src: Path, dest: Path, edit) -> Path:
    """Copy a saved VQGAN with its state dict changed by `edit(state)`."""
    dest.mkdir()
    (dest / YAML).write_text((src / YAML).read_text())
    raw = torch.load(src / CKPT, weights_only=True)
    edit(raw["state_dict"])
    torch.save(raw, dest / CKPT)
    return dest


def test_checkpoint_has_metas_layout_and_loads_back(saved):
    raw = torch.load(saved / CKPT, weights_only=True)
    assert set(raw) == {"state_dict"}
    assert set(TAMING_KEYS) <= set(raw["state_dict"])
    assert "decoder.up.0.upsample.conv.weight" not in raw["state_dict"]  # the finest level never upsamples
    params = yaml.safe_load((saved / YAML).read_text())["model"]["params"]
    assert params["n_embed"] == 64 and params["ddconfig"]["ch_mult"] == [1, 2]
    assert VQGANConfig.from_yaml(saved / YAML) == TINY_CONFIG
    reference, loaded = random_vqgan(TINY_CONFIG, seed=3), load_vqgan(saved)
    assert not loaded.has_encoder  # generation loads the decoder side only
    codes = _codes(2, 4, 6)
    assert torch.equal(loaded.decode_codes(codes), reference.decode_codes(codes))


def test_missing_key_is_named(saved, tmp_path):
    folder = _rewrite(saved, tmp_path / "m", lambda sd: sd.pop("decoder.up.1.attn.0.q.weight"))
    with pytest.raises(ValueError, match=r"missing key\(s\) decoder\.up\.1\.attn\.0\.q\.weight"):
        load_vqgan(folder)


def test_unexpected_key_is_named(saved, tmp_path):
    folder = _rewrite(
        saved, tmp_path / "u", lambda sd: sd.update({"decoder.up.2.block.0.conv1.weight": torch.ones(1)})
    )
    with pytest.raises(ValueError, match=r"unexpected key\(s\) decoder\.up\.2\.block\.0\.conv1\.weight"):
        load_vqgan(folder)


def test_wrong_shape_is_named(saved, tmp_path):
    folder = _rewrite(
        saved, tmp_path / "s", lambda sd: sd.update({"quantize.embedding.weight": torch.zeros(32, 8)})
    )
    with pytest.raises(
        ValueError, match=r"quantize\.embedding\.weight has shape \(32, 8\).*expects \(64, 8\)"
    ):
        load_vqgan(folder)


def test_training_only_loss_keys_are_dropped(saved, tmp_path):
    folder = _rewrite(
        saved, tmp_path / "l", lambda sd: sd.update({"loss.discriminator.main.0.weight": torch.ones(2)})
    )
    codes = _codes(1, 3, 3)
    assert torch.equal(load_vqgan(folder).decode_codes(codes), load_vqgan(saved).decode_codes(codes))


def test_missing_files_and_bad_yaml(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="vqgan.yaml is missing"):
        load_vqgan(tmp_path)
    (tmp_path / YAML).write_text(yaml.safe_dump({"model": {"params": {"embed_dim": 8, "ddconfig": {}}}}))
    (tmp_path / CKPT).write_bytes((saved / CKPT).read_bytes())
    with pytest.raises(ValueError, match="vqgan.yaml: expected Meta's vqgan.yaml layout.*missing 'n_embed'"):
        load_vqgan(tmp_path)


def test_decode_shape_range_and_batch_independence(saved):
    model = load_vqgan(saved)
    codes = _codes(3, 5, 7, seed=1)
    pixels = model.decode_codes(codes)
    assert pixels.shape == (3, 3, 10, 14)  # f = 2 for two levels
    rows = torch.cat([model.decode_codes(codes[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(rows, pixels, atol=1e-5, rtol=1e-5)
    image = to_uint8(pixels)
    assert image.shape == (3, 10, 14, 3) and image.dtype == torch.uint8
    ramp = torch.tensor([-2.0, -1.0, 0.0, 1.0, 5.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert to_uint8(ramp)[0, 0, :, 0].tolist() == [0, 0, 127, 255, 255]  # clamp, then truncate like Meta
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 64\)"):
        model.decode_codes(codes + 64)


def test_encoder_matches_transformers_chameleon_vqvae(saved):
    """transformers converts the non-decoder keys of vqgan.ckpt into its ChameleonVQVAE; on the same
    weights our encoder must give the same codes."""
    ours = load_vqgan(saved, with_encoder=True)
    hf = ChameleonVQVAE(ChameleonVQVAEConfig(**TINY_CONFIG.transformers_config())).eval()
    state = torch.load(saved / CKPT, weights_only=True)["state_dict"]
    hf.load_state_dict({k: v for k, v in state.items() if not k.startswith("decoder.")}, strict=True)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.inference_mode():
        theirs = hf.encode(images).image_tokens.view(2, 16, 16)
    codes = ours.encode_codes(images)
    assert torch.equal(codes, theirs)
    assert len(codes.unique()) > 1  # not a degenerate constant encoding


def test_round_trip(saved):
    model = load_vqgan(saved, with_encoder=True)
    codes = _codes(2, 6, 6, seed=2)
    assert torch.equal(model.quantize.nearest(model.quantize.lookup(codes)), codes)  # codebook round trip
    pixels = model.decode_codes(codes)
    again = model.encode_codes(pixels.clamp(-1, 1))
    assert again.shape == codes.shape and int(again.min()) >= 0 and int(again.max()) < TINY_CONFIG.n_embed
    with pytest.raises(ValueError, match="without its encoder"):
        load_vqgan(saved).encode_codes(pixels)
