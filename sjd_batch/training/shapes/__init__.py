"""Training code of `shapes-t2i` (loaded from `sjd_batch.models.shapes`).

Modules: `data` (the captioned-image generator), `checker` (reads pixels, judges caption adherence),
`objective` (the training sequences and the losses over them), `train` (reproducible training,
`sjd-batch train-shapes`) and `card` (the model card's figures).
"""
