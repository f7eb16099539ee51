"""Training code of `shapes-t2i` (loaded from `sjd_batch.models.shapes`).

Modules: `data` (the captioned-image generator), `checker` (reads pixels, judges caption adherence),
`train` (reproducible training, `sjd-batch train-shapes`) and `card` (the model card's figures).
"""
