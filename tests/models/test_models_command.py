"""`sjd-batch models`: every registered family and model, with defaults that match what loads."""

from __future__ import annotations

import json

import pytest

import sjd_batch
from sjd_batch import cli
from sjd_batch.models.registry import FAMILIES, MODELS
from tests.models.contract import valid_tokens


def _json(capsys: pytest.CaptureFixture) -> list[dict]:
    capsys.readouterr()
    assert cli.main(["models", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_lists_every_family_and_model(capsys):
    rows = _json(capsys)
    assert [r["name"] for r in rows if r["kind"] == "family"] == list(FAMILIES)
    assert [r["name"] for r in rows if r["kind"] == "model"] == list(MODELS)
    for r in rows:
        assert r["tokens_per_image"] and r["resolution"] and r["loads_from"] and r["summary"], r
        assert r["window"] >= 2 and r["top_k"] >= 0 and r["cfg_mode"] in ("raw", "log-softmax"), r
    emu3 = next(r for r in rows if r["name"] == "emu3")
    # docs/model-families.md: Emu3-Gen samples with top-k 2048 and CFG 3.0 on log-probabilities
    assert (emu3["top_k"], emu3["cfg_scale"], emu3["cfg_mode"]) == (2048, 3.0, "log-softmax")
    assert emu3["hf_model_types"] == ["emu3"] and "image_area" in emu3["options"]


def test_table_has_one_line_per_entry(capsys):
    capsys.readouterr()
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "kind", "family", "tokens/image"]
    names = [line.split()[0] for line in lines[2:]]
    assert names == [*FAMILIES, *MODELS]
    for title in ("res", "window", "loads from"):  # no cell runs into the next column
        col = lines[0].index(title)
        assert all(line[col - 2 : col] == "  " and line[col] != " " for line in lines[2:]), title
    tiny = next(line for line in lines if line.startswith("tiny-random"))
    assert "3 (raw)" in tiny and "73" in tiny


@pytest.mark.parametrize("name", ["tiny-random", "shapes-t2i"])
def test_listed_defaults_are_what_the_model_uses(capsys, name):
    row = next(r for r in _json(capsys) if r["name"] == name)
    model = sjd_batch.load_model(name)
    sampling = model.default_sampling
    keys = ("top_k", "top_p", "cfg_scale", "cfg_mode", "temperature")
    assert {k: row[k] for k in keys} == {k: getattr(sampling, k) for k in keys}
    assert int(row["tokens_per_image"].split("=")[-1]) == model.layout.length
    pixels = model.decode_pixels(valid_tokens(model, 1, model.layout.length))
    assert pixels.shape[1:3] == tuple(int(n) for n in row["resolution"].split("x"))
