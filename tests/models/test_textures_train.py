"""textures-t2i training: the warm start keeps the starting model's function, and a stopped stage resumed
from its checkpoint ends bit-identical to the same stage run straight through."""

from __future__ import annotations

import json
from dataclasses import replace

import torch

from sjd_batch.models.shapes.model import load_shapes, load_tokenizer
from sjd_batch.training.shapes.objective import next_logits, sequences
from sjd_batch.training.textures.train import TexturesTrainConfig, read_config, train, warm_start

CAPTIONS = ["a large red circle at top left",
            "a small blue square at center and a large green cross at top right"]


def _ids(vocab, seed: int = 0) -> torch.Tensor:
    codes = torch.randint(0, vocab.num_codes, (2, 16, 16), generator=torch.Generator().manual_seed(seed))
    return sequences(CAPTIONS, codes, vocab, torch.tensor([False, True]))[0]


def test_warm_start_onto_the_same_codebook_keeps_the_function():
    model = load_shapes()
    codebook = load_tokenizer().codebook
    lm, vocab = warm_start(model.lm, model.vocab, codebook, codebook.clone())
    assert vocab == model.vocab
    ids = _ids(vocab)
    with torch.no_grad():
        assert torch.allclose(next_logits(lm.eval(), model.grid, ids), next_logits(model.lm, model.grid, ids),
                              atol=1e-5)


def test_warm_start_maps_new_codes_to_similar_old_ones():
    model = load_shapes()
    old = load_tokenizer().codebook
    new = torch.cat([old[:3] + 0.01, old[:3] - 0.01])  # two children of each of three old codes
    lm, vocab = warm_start(model.lm, model.vocab, old, new)
    assert vocab.num_codes == 6 and vocab.size == model.vocab.size - 512 + 6
    table = lm.get_input_embeddings().weight
    old_table = model.lm.get_input_embeddings().weight
    for k in range(6):  # each starts near its parent, and siblings differ
        parent = old_table[model.vocab.code_start + k % 3]
        assert torch.norm(table[vocab.code_start + k] - parent) < 0.2 * torch.norm(parent)
    assert not torch.equal(table[vocab.code_start], table[vocab.code_start + 3])
    assert torch.equal(table[vocab.code_end :], old_table[model.vocab.code_end :])  # markers, bound tokens


def test_a_resumed_stage_ends_where_a_straight_run_does(tmp_path):
    # resume_from has this run's codebook size (512), so no codebook is fitted; every step is in warm-up,
    # so the learning rate does not depend on the step budget and the two runs see the same schedule
    base = TexturesTrainConfig(num_codes=512, batch=2, steps=3, warmup=10, eval_every=100, eval_images=2,
                               probe_captions=0, max_minutes=1e6, threads=1, bf16=False)
    straight = train(replace(base, out=str(tmp_path / "straight")), log=lambda r: None)
    stopped = tmp_path / "stopped"
    train(replace(base, steps=2, out=str(stopped)), log=lambda r: None)
    config = json.loads((stopped / "train_config.json").read_text()) | {"steps": 3}
    (stopped / "train_config.json").write_text(json.dumps(config))
    events: list[dict] = []
    resumed = train(read_config(stopped), log=events.append, resume=True)
    assert events[0] == {"event": "resume", "step": 2, "seconds": events[0]["seconds"]}
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
