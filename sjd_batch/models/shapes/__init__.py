"""`shapes-t2i`: a small text-to-image model that sjd-batch trains itself on procedural captioned shapes.

Modules: `data` (the captioned-image generator), `tokenizer` (k-means patch codebook), `checker`
(reads pixels, judges caption adherence), `model` (loads the shipped assets as a `LlamaT2IModel`) and
`train` (reproducible training). Importing this package loads nothing.
"""
