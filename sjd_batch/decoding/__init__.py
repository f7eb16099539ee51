"""The decoding core: AR, Jacobi, SJD, SJD-VP, MC-SJD and SJD-PAC over the `ImageTokenModel` protocol.

This package imports only `torch` and the standard library (enforced by `tests/test_layering.py`),
so it can be read, tested and profiled without Ray, boto3, pyarrow or PIL.
"""

from sjd_batch.decoding.batch import DecodeOutput, decode
from sjd_batch.decoding.engine import HOLD, EngineStats, Finished, Request, decode_stream
from sjd_batch.decoding.methods import METHODS, DecodeConfig, resolve_method
from sjd_batch.decoding.protocol import ImageTokenModel, Layout, Prefix, Window
from sjd_batch.decoding.rng import sample_seed
from sjd_batch.decoding.sampling import SamplingConfig
from sjd_batch.decoding.state import SampleStats

__all__ = [
    "HOLD",
    "METHODS",
    "DecodeConfig",
    "DecodeOutput",
    "EngineStats",
    "Finished",
    "ImageTokenModel",
    "Layout",
    "Prefix",
    "Request",
    "SampleStats",
    "SamplingConfig",
    "Window",
    "decode",
    "decode_stream",
    "resolve_method",
    "sample_seed",
]
