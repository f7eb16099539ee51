"""Emu3-Gen (BAAI) through transformers: `adapter` (the family loader), `tiny` (the test fixture).

`FAMILY` is the family's one declaration: the registry lists it, the adapter reads its defaults.
"""

from sjd_batch.models.family import Defaults, Family

FAMILY = Family(
    name="emu3",
    loader="sjd_batch.models.emu3.adapter:load",
    summary="BAAI Emu3-Gen: 8B Llama-style LM over a MoVQ codebook, EOL per row, log-softmax CFG",
    loads_from="transformers Emu3ForConditionalGeneration + Emu3Processor: hub id or local folder",
    defaults=Defaults(tokens_per_image="90·91 + 3 = 8193", resolution="720x720", top_k=2048,
                      cfg_scale=3.0, cfg_mode="log-softmax"),
    hf_model_types=("emu3",),
    options=("image_area", "negative_prompt", "positive_suffix"),
)
