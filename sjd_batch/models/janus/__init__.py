"""Janus / Janus-Pro (DeepSeek) through transformers: `adapter` (the family loader), `tiny` (the test
fixture).

`FAMILY` is the family's one declaration: the registry lists it, the adapter reads its defaults.
"""

from sjd_batch.models.family import Defaults, Family

# The authors' sampling (deepseek-ai/Janus generation_inference.py: CFG 5 on raw logits, T 1, no top-k).
FAMILY = Family(
    name="janus",
    loader="sjd_batch.models.janus.adapter:load",
    summary="DeepSeek Janus / Janus-Pro: Llama LM, separate generation head over 16,384 VQ codes, CFG 5",
    loads_from="transformers JanusForConditionalGeneration + JanusProcessor: hub id or local folder",
    defaults=Defaults(tokens_per_image="24·24 = 576", resolution="384x384", top_k=0, cfg_scale=5.0),
    hf_model_types=("janus",),
    options=("attn_implementation",),
)
