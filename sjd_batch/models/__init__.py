"""Model families implementing `sjd_batch.decoding.protocol.ImageTokenModel`, and their registry."""
