"""Lumina-mGPT (Alpha-VLLM) on the Chameleon backbone: `adapter` (the family loader), `tokens` (its
vocabulary and layout), `tiny` (the test fixture). Its VQGAN decoder is `models/blocks/vqgan.py`.

`FAMILY` is the family's one declaration: the registry lists it, the adapter reads its defaults.
"""

from sjd_batch.models.family import Defaults, Family

FAMILY = Family(
    name="lumina-mgpt",
    loader="sjd_batch.models.lumina.adapter:load",
    summary="Alpha-VLLM Lumina-mGPT: 7B Chameleon LM over Meta's VQGAN codes (8192), size header, EOL "
    "per row, raw CFG on the image-only context, image top-k 2000",
    loads_from="local folder: HF Chameleon checkpoint (config.json with vocabulary_map, tokenizer) + "
    "Meta's vqgan.ckpt and vqgan.yaml, sjd_batch.json with the resolution",
    # The authors' sampling (inference_solver.py create_logits_processor).
    defaults=Defaults(tokens_per_image="3 + 48·49 + 2 = 2357", resolution="768x768", top_k=2000,
                      cfg_scale=3.0),
    hf_model_types=("chameleon",),
    options=("resolution", "vqgan"),
)
