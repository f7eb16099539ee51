"""IO layer: URIs (local or S3), Parquet prompt shards, and the output layout of a job.

- `storage`: `Storage.from_uri(uri)`, the only place that imports boto3 or pyarrow.fs.
- `prompts`: input files -> deterministic shards -> validated `PromptRow`s (or `BadRow`s).
- `results`: output keys, PNG / tar encoding, the stats Parquet dataset and commit markers.

Importing this package loads nothing heavy; import the submodules you need.
"""
