"""`textures-t2i`: shapes-t2i's captioned layout filled with uncaptioned procedural textures.

Modules: `data` (the captioned-image generator), `train` (resumable training with checkpoints) and
`card` (the model card's figures). The loader lives on the runtime path: textures-t2i is a shapes-family model
(`sjd_batch.models.shapes`, registered in `sjd_batch.models.registry`).
"""
