"""The four stages that turn one prompt shard into images, stats and a commit marker.

    ShardSpec ──read──▶ ShardInput ──decode──▶ Decoded ──encode──▶ StatsRecord ──commit──▶ _commits/…
                  (tasks: SampleTask,   (one per task,   (image stored,     (groups -> _partial/,
                   done: StatsRecord,    any order)       in a thread)       then stats, errors,
                   bad: BadRow)                                              tar, marker)

- `read`: the shard's rows, each valid one a `SampleTask` with its seed resolved once; the records of
  samples an earlier attempt finished (its partial files); the rows that cannot become samples.
- `decode`: a stream of tasks in, a stream of `Decoded` out. One engine per worker keeps
  `run.batch_size` rows in flight and refills a slot when a row finishes, from whichever shard comes
  next: an actor holds two shards at once, so a shard boundary does not drain the batch.
- `encode`: PNG-encode one sample and store it; its `StatsRecord` is built here (`StatsRecord.of`).
- `commit`: a group of finished records becomes one partial file (sample-level resume); at the end the
  stats, errors, tar and, last, the commit marker.

`sjd_batch.worker.ShardWorker` wires them and overlaps decoding with encoding and uploads.
"""
