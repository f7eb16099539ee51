"""What a model family and a registered model are: `Family`, `Defaults`, `RegisteredModel`.

Each family package declares its own `FAMILY` (and its registered models' defaults) with these types,
in its `__init__.py`, which imports nothing heavy: the registry collects them, and the family's adapter
reads its defaults from the same declaration, so each default is written once.
"""

from __future__ import annotations

from dataclasses import dataclass

from sjd_batch.decoding.sampling import SamplingConfig

MANIFEST = "sjd_batch.json"  # in a model folder: {"family": "<a key of FAMILIES>", **loader options}


class ModelSourceError(ValueError):
    """A model source that cannot be resolved or loaded; the message names it and what was expected."""


@dataclass(frozen=True)
class Defaults:
    """A family's published defaults (docs/model-families.md). Sampling fields become `SamplingConfig`;
    a job's `sampling:` section overrides them.

    Attributes:
        tokens_per_image: generated tokens at the default resolution, as a formula, e.g. "90·91 + 3 = 8193".
        resolution: default image size in pixels, e.g. "720x720".
        window: the SJD window the family's authors ran (documentation: the engine's own default, 16,
            applies unless a job sets `method.window`).
    """

    tokens_per_image: str
    resolution: str
    window: int = 16
    top_k: int = 0
    top_p: float = 1.0
    cfg_scale: float = 1.0
    cfg_mode: str = "raw"
    temperature: float = 1.0

    def sampling(self) -> SamplingConfig:
        """The family's default sampling, for an adapter's `default_sampling`."""
        return SamplingConfig(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            cfg_scale=self.cfg_scale,
            cfg_mode=self.cfg_mode,
        )


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: the key in `FAMILIES`, and the `family` of a folder's `sjd_batch.json`.
        loader: "module:function" of `load(source, device, dtype, **options) -> ImageTokenModel`, where
            `source` is a local folder or a hub id.
        summary: one line for `sjd-batch models`.
        loads_from: what the loader reads, in words.
        defaults: sampling and layout defaults from the family's authors.
        hf_model_types: `config.json` `model_type` values that mean this family (a folder without
            `sjd_batch.json`).
        options: keyword options the loader accepts (from `sjd_batch.json` and a job's `model.options`).
    """

    name: str
    loader: str
    summary: str
    loads_from: str
    defaults: Defaults
    hf_model_types: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegisteredModel:
    """A short name for a model: either a `factory` ("module:function" taking `device=`, `dtype=`) or a
    `source` that `load_model` resolves like any other (e.g. "emu3:BAAI/Emu3-Gen-hf")."""

    name: str
    family: str
    summary: str
    defaults: Defaults | None = None  # None: the family's
    factory: str | None = None
    source: str | None = None
