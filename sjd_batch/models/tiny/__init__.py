"""Tiny random model folders for the CPU tests (docs/model-families.md), one module per family: `lumina`,
`janus`, `emu3`, and `vqgan` (the fixtures' VQGAN). Each writes what the family's loader reads from a
released checkpoint; the weights are random, so acceptance statistics from them mean nothing. LlamaGen's
lives in `sjd_batch.models.llamagen.tiny`."""
