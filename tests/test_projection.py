"""The GPU projection's arithmetic (a roofline, labelled as a projection), and its command."""

from __future__ import annotations

import json

import pytest

from sjd_batch import cli
from sjd_batch.projection import ARCHS, GPUS, fits, forward_s, project


def test_roofline_matches_the_published_bandwidth_floor():
    lumina, h100 = ARCHS["lumina-mgpt-7b"], GPUS["H100"]
    assert 6.5e9 < lumina.trunk_params + lumina.head_params < 7.0e9  # a 7B model
    # batch 1 with CFG, mid-decode: ~13.5 GB of weights + the KV cache over 3.35 TB/s: about 4.2 ms
    ms = 1e3 * forward_s(lumina, h100, 1, 1, lumina.prompt + lumina.tokens // 2)
    assert 4.0 < ms < 4.8


def test_memory_bound_then_compute_bound():
    arch, gpu = ARCHS["lumina-mgpt-7b"], GPUS["H200"]
    one, wide = forward_s(arch, gpu, 1, 1, 1000), forward_s(arch, gpu, 1, 16, 1000)
    assert wide / one < 1.05  # a 16-token window costs what one token does at batch 1
    big = forward_s(arch, gpu, 64, 64, 1000)
    assert big / one > 10  # 8192 rows x tokens: the FLOPs dominate
    assert fits(arch, gpu, 1, 16) and not fits(arch, gpu, 4096, 16)


def test_projection_follows_step_compression():
    arch, gpu = ARCHS["janus-pro-7b"], GPUS["H100"]
    ar, sjd = project(arch, gpu, "ar", 1, 1.0), project(arch, gpu, "sjd", 8, 2.0)
    assert ar.latency_s / sjd.latency_s == pytest.approx(2.0, rel=0.05)  # memory-bound: latency / c
    assert ar.best_batch >= sjd.best_batch  # wider windows run out of compute at smaller batches


def test_a_wider_forward_is_priced_by_its_tokens_not_its_window():
    # sjd-pac's tree makes a forward of 26 tokens at window 16: same compression, fewer images/s at the
    # batch sizes where compute binds; the window alone would have priced it like a chain
    arch, gpu = ARCHS["llamagen-xl"], GPUS["H100"]
    chain, tree = project(arch, gpu, "sjd-pac", 16, 3.0), project(arch, gpu, "sjd-pac", 16, 3.0, width=26)
    assert tree.images_per_s < 0.9 * chain.images_per_s
    assert project(arch, gpu, "sjd-pac", 16, 3.0, width=8) == chain  # never narrower than the window


def test_project_reads_several_bench_files_and_their_tokens_per_forward(tmp_path, capsys):
    tune = {"method": "sjd", "calibration": [{"window": 16, "compression": 2.0}]}
    tree = {"results": [{"method": "sjd-pac", "params": {"window": 16}, "step_compression": 3.0,
                         "tokens_per_forward": 26.0}]}
    chain = {"results": [{"method": "mc-sjd", "params": {"window": 16}, "step_compression": 3.0,
                          "tokens_per_forward": 16.0}]}
    for name, data in (("t", tune), ("a", tree), ("b", chain)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    out = tmp_path / "p.json"
    assert cli.main(["project", "--tune", str(tmp_path / "t.json"), "--bench", str(tmp_path / "a.json"),
                     "--bench", str(tmp_path / "b.json"), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    # same compression and the same memory-bound latency at batch 1: the tie goes to the setting with
    # more images/s, the chain, whose narrower forward is cheaper where compute binds
    assert all(r["best"]["method"] == "mc-sjd" for r in rows)


def test_project_without_a_tune_file_shows_plain_sjd_from_the_bench(tmp_path, capsys):
    bench = {"results": [{"method": "sjd:window=64", "params": {"window": 64}, "step_compression": 2.2},
                         {"method": "sjd", "params": {"window": 16}, "step_compression": 2.1},
                         {"method": "mc-sjd", "params": {"window": 16}, "step_compression": 3.5}]}
    (tmp_path / "b.json").write_text(json.dumps(bench))
    out = tmp_path / "p.json"
    assert cli.main(["project", "--bench", str(tmp_path / "b.json"), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["tuned"]["method"] for r in rows} <= {"sjd", "sjd:window=64"}
    assert all(r["best"]["method"] == "mc-sjd" for r in rows)
    (tmp_path / "m.json").write_text(json.dumps({"results": bench["results"][2:]}))
    assert cli.main(["project", "--bench", str(tmp_path / "m.json")]) == 2  # no sjd to compare with
    assert "no `sjd` setting" in capsys.readouterr().err


def test_project_command(tmp_path, capsys):
    tune = {"method": "sjd", "calibration": [{"window": 1, "compression": 1.0},
                                             {"window": 16, "compression": 2.5},
                                             {"window": 32, "compression": 2.8}]}
    bench = {"results": [{"method": "ar", "params": {}, "step_compression": 1.0},
                         {"method": "mc-sjd", "params": {"window": 16}, "step_compression": 3.1},
                         {"method": "sjd-vp:vp_lossy=true", "params": {"window": 16, "vp_lossy": True},
                          "step_compression": 9.0}]}
    (tmp_path / "t.json").write_text(json.dumps(tune))
    (tmp_path / "b.json").write_text(json.dumps(bench))
    out = tmp_path / "p.json"
    assert cli.main(["project", "--tune", str(tmp_path / "t.json"), "--bench", str(tmp_path / "b.json"),
                     "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("PROJECTION") and "not a GPU measurement" in printed
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * len(ARCHS)
    assert all(r["best"]["method"] == "mc-sjd" for r in rows)  # the lossy setting is never "best lossless"
    assert all(r["tuned"]["window"] in (16, 32) for r in rows)


# `bench-gpu`'s forward file for one family: ms by "window,batch" (batch 4 has no window 64: out of memory)
MEASURED = {"arch": {"name": "lumina-mgpt-7b"}, "gpu": "NVIDIA H100 80GB HBM3", "cfg_rows": True,
            "forward_ms": {"1,1": 20.0, "16,1": 22.0, "64,1": 40.0, "1,4": 21.0, "16,4": 30.0}}


def _measured(data=MEASURED, path="forward-lumina-mgpt-7b.json"):
    from sjd_batch.commands.project import measured_forwards

    return measured_forwards(path, data)


def test_measured_forwards_interpolate_in_the_width_and_know_their_batches():
    m = _measured()
    assert m.arch == "lumina-mgpt-7b" and m.gpu == "H100"
    assert m.at(1, 16) == pytest.approx(0.022)  # a measured cell
    assert m.at(1, 40) == pytest.approx(0.031)  # half-way between windows 16 and 64
    assert m.at(1, 74) == pytest.approx(0.04375)  # past the widest: the line through the last two
    assert m.at(4, 1) == pytest.approx(0.021) and m.at(4, 10) == pytest.approx(0.0264)
    assert m.at(4, 26) is None  # window 64 was reached at batch 1, not at 4: out of memory there
    assert m.at(1, 0) == pytest.approx(0.020)  # below the narrowest measured window: its cost
    assert m.at(2, 16) is None  # batch 2 was not measured


def test_measured_forwards_replace_the_roofline():
    arch, gpu, m = ARCHS["lumina-mgpt-7b"], GPUS["H100"], _measured()
    roof, meas = project(arch, gpu, "sjd", 16, 2.0), project(arch, gpu, "sjd", 16, 2.0, measured=m)
    assert roof.forward == "roofline" and meas.forward == "measured"
    # prefill (a 64-token forward at batch 1) + T / c forwards of 16 tokens, all at the measured cost
    assert meas.latency_s == pytest.approx(0.040 + arch.tokens / 2.0 * 0.022)
    assert meas.best_batch == 4  # only measured batches are candidates: 4 / 30 ms beats 1 / 22 ms
    assert meas.images_per_s == pytest.approx(4 / (arch.tokens / 2.0 * 0.030))


SJD_BENCH = {"results": [{"method": "sjd", "params": {"window": 16}, "step_compression": 2.0}]}


def _project_args(tmp_path, forward: dict) -> list[str]:
    """`project` of SJD_BENCH with one forward file (written under tmp_path)."""
    (tmp_path / "b.json").write_text(json.dumps(SJD_BENCH))
    (tmp_path / "f.json").write_text(json.dumps(forward))
    return ["project", "--bench", str(tmp_path / "b.json"), "--forward", str(tmp_path / "f.json")]


def test_project_uses_measured_forwards_where_they_apply(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert cli.main([*_project_args(tmp_path, MEASURED), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| lumina-mgpt-7b (2357) | H100 (measured forward) |" in printed
    rows = {(r["family"], r["gpu"]): r for r in json.loads(out.read_text())["rows"]}
    assert rows[("lumina-mgpt-7b", "H100")]["forward"] == "measured"
    assert rows[("lumina-mgpt-7b", "H100")]["ar"]["latency_s"] == pytest.approx(0.040 + 2357 * 0.020)
    assert {r["forward"] for key, r in rows.items() if key != ("lumina-mgpt-7b", "H100")} == {"roofline"}


@pytest.mark.parametrize("change, message", [
    ({"gpu": "cpu"}, "field 'gpu' is 'cpu'"),
    ({"arch": {"name": "small"}}, "arch.name 'small' is not one of"),
    ({"forward_ms": {"16": 3.0}}, "forward_ms entry '16'"),
    ({"forward_ms": {"16,1": -1}}, "forward_ms entry '16,1'"),
    ({"forward_ms": {"16,4": 3.0}}, "no forward measured at batch 1"),
])
def test_a_bad_forward_file_is_refused_by_name(tmp_path, capsys, change, message):
    assert cli.main(_project_args(tmp_path, MEASURED | change)) == 2
    err = capsys.readouterr().err
    assert message in err and str(tmp_path / "f.json") in err
