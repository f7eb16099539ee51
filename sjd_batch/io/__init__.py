"""IO layer: URIs (local or S3), Parquet prompt shards, and the output layout of a job.

- `storage`: `Storage` (interface, errors, URI rules) and its backends, the only modules that import boto3 or
  pyarrow.fs; `backends.open_storage(uri)` picks one for a URI.
- `prompts`: input files -> deterministic shards -> validated `PromptRow`s (or `BadRow`s).
- `results`: the stats and errors datasets and the commit markers (keys: `layout`; image formats: `formats`).

Importing this package loads nothing heavy; import the submodules you need.
"""
