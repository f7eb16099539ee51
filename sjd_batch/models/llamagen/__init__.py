"""LlamaGen (FoundationVision/LlamaGen): GPT, VQ tokenizer, T5 conditioning and the family adapter.

`adapter.load(source, device, dtype, **options)` reads a model folder holding the official checkpoints
(see `adapter.py` for the folder layout). Nothing here runs at import time.

`FAMILY` (t2i) and `C2I_DEFAULTS` are the family's one declaration of its defaults: the registry lists
them, `spec.py` builds each kind's default sampling from them.
"""

from sjd_batch.models.family import Defaults, Family

# The authors' sampling (LlamaGen autoregressive/sample/sample_t2i.py, sample_c2i.py).
FAMILY = Family(
    name="llamagen",
    loader="sjd_batch.models.llamagen.adapter:load",
    summary="FoundationVision LlamaGen: GPT over VQ-16 codes (16,384); t2i reads flan-t5-xl states, "
    "c2i a class id; CFG with a learned null embedding (c2i: cfg 4.0, top-k 2000)",
    loads_from="local folder: official GPT + VQ .pt checkpoints (+ a T5 folder for t2i), sjd_batch.json",
    defaults=Defaults(tokens_per_image="32·32 = 1024", resolution="512x512", top_k=1000, top_p=1.0,
                      cfg_scale=7.5),
    options=("kind", "gpt", "vq", "image_size", "gpt_model", "vq_model", "t5", "cls_token_num",
             "num_classes", "codebook_size", "codebook_embed_dim", "t5_max_length", "t5_dtype", "name",
             "sampling", "trust_checkpoint"),
)
C2I_DEFAULTS = Defaults(tokens_per_image="16·16 = 256", resolution="256x256", top_k=2000, top_p=1.0,
                        cfg_scale=4.0)
