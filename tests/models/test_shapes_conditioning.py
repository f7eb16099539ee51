"""How shapes-t2i reads its caption and its place: position-bound caption tokens and `GridPositions`.

- Bound tokens: "a large red circle at top left" -> large@top left, red@top left, circle@top left.
- Grid positions: learned row/column vectors on image-layout tokens. The tables must land on the
  same layout offset in training (right-padded full sequences) and in decoding (left-padded prefill,
  then windows over the slot cache), or the model would be trained on one position code and sampled
  with another. These tests pin that, and that the path is really used.
"""

from __future__ import annotations

import argparse

import pytest
import torch

from sjd_batch.commands.train_shapes import add_arguments
from sjd_batch.decoding.protocol import decode_window, prefill_window
from sjd_batch.models.blocks.llama_t2i import BOI, UNK, GridPositions, Vocabulary, image_offsets
from sjd_batch.models.shapes.model import load_shapes, load_tokenizer
from sjd_batch.training.shapes.data import POSITIONS, caption_words, make_sample
from sjd_batch.training.shapes.objective import next_logits, sequences
from sjd_batch.training.shapes.train import TrainConfig, add_bound_words, build_lm, save_assets
from tests.models.contract import assert_greedy_methods_match_ar, assert_window_matches_stepwise

PROMPTS = ["a large red circle at top left",
           "a small blue square at center and a large green cross at bottom right"]


def _random_grid(model, scale: float = 0.5, seed: int = 0) -> GridPositions:
    """Non-zero tables, so that a wrong offset changes logits (trained tables may be near zero)."""
    layout = model.layout
    grid = GridPositions(layout.height, layout.row_stride, model.lm.config.hidden_size)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        grid.row.copy_(torch.randn(grid.row.shape, generator=gen) * scale)
        grid.col.copy_(torch.randn(grid.col.shape, generator=gen) * scale)
    return grid


@pytest.fixture(scope="module")
def model():
    m = load_shapes()
    m.grid = _random_grid(m)
    return m


def test_offsets_map_to_row_and_column():
    grid = GridPositions(rows=16, row_stride=17, hidden=4)
    with torch.no_grad():
        grid.row.copy_(torch.arange(17.0)[:, None].expand(17, 4) * 100)
        grid.col.copy_(torch.arange(17.0)[:, None].expand(17, 4))
    t = torch.tensor([0, 1, 16, 17, 35, 271, 272])  # (0,0) (0,1) row-0 EOL (1,0) (2,1) row-15 EOL, EOI
    assert grid(t)[:, 0].tolist() == [0, 1, 16, 100, 201, 1516, 1600]
    assert grid.length == 273
    outside = grid(torch.tensor([-1, -5, 273, 400]))
    assert torch.count_nonzero(outside) == 0  # prompt tokens and padding get no position vector


def test_training_offsets_start_after_boi():
    vocab = load_shapes().vocab
    codes = torch.zeros(2, 16, 16, dtype=torch.long)
    ids, labels = sequences(PROMPTS, codes, vocab, torch.tensor([False, True]))
    offsets = image_offsets(ids)
    for row in range(2):
        boi = int((ids[row] == BOI).nonzero())
        assert offsets[row, boi] == -1 and offsets[row, boi + 1] == 0
        assert (offsets[row, :boi] < 0).all()
        assert labels[row, boi + 1] != -100  # offset 0 is the first image code


def test_window_forward_matches_stepwise_with_grid(model):
    assert_window_matches_stepwise(model, PROMPTS)


def test_greedy_methods_match_ar_with_grid(model):
    assert_greedy_methods_match_ar(model, PROMPTS, window=8)


def test_decoder_logits_equal_training_logits(model):
    """Teacher-forced training logits == prefill + one window over the same image tokens."""
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(0, model.vocab.num_codes, (1, 16, 16), generator=gen)
    ids, _ = sequences(PROMPTS[1:], codes, model.vocab, torch.tensor([False]))
    boi = int((ids[0] == BOI).nonzero())
    image = ids[:, boi + 1 :]
    train_logits = next_logits(model.lm, model.grid, ids)[0, boi:]  # predictions of offsets 0 .. T-1

    prefix = model.encode(PROMPTS[1:], None, with_uncond=False)
    total = prefix.length + image.shape[1] + 1
    cache = model.new_cache(1, total)
    first = model.forward(cache, prefix.ids, prefill_window(prefix, total))[:, -1]
    window = decode_window(torch.tensor([prefix.length]), prefix.start, image.shape[1] - 1, total)
    rest = model.forward(cache, image[:, :-1], window)
    decode_logits = torch.cat([first[:, None], rest], dim=1)[0].float()
    torch.testing.assert_close(decode_logits, train_logits, atol=1e-4, rtol=1e-4)

    # negative control: the same decode one offset off (tables shifted by one column) disagrees
    shifted = GridPositions(16, 17, model.lm.config.hidden_size)
    with torch.no_grad():
        shifted.row.copy_(model.grid.row)
        shifted.col.copy_(torch.roll(model.grid.col, 1, dims=0))
    assert not torch.allclose(next_logits(model.lm, shifted, ids)[0, boi:], train_logits, atol=1e-3)


def test_grid_changes_the_logits(model):
    codes = torch.zeros(1, 16, 16, dtype=torch.long)
    ids, _ = sequences(PROMPTS[:1], codes, model.vocab, torch.tensor([False]))
    with_grid = next_logits(model.lm, model.grid, ids)
    without = next_logits(model.lm, None, ids)
    boi = int((ids[0] == BOI).nonzero())
    torch.testing.assert_close(with_grid[:, :boi], without[:, :boi])  # the prompt is untouched
    assert (with_grid[:, boi + 1 :] - without[:, boi + 1 :]).abs().max() > 0.1


def test_saved_tables_load_back_and_folders_without_them_still_load(model, tmp_path):
    save_assets(model.lm, model.grid, load_tokenizer(), model.vocab, TrainConfig(), tmp_path / "with")
    loaded = load_shapes(assets=tmp_path / "with")
    assert torch.equal(loaded.grid.row, model.grid.row) and torch.equal(loaded.grid.col, model.grid.col)

    save_assets(model.lm, None, load_tokenizer(), model.vocab, TrainConfig(), tmp_path / "without")
    assert not (tmp_path / "without" / "grid_positions.safetensors").exists()
    assert load_shapes(assets=tmp_path / "without").grid is None


def test_grid_must_cover_the_layout(model):
    from sjd_batch.models.blocks.llama_t2i import LlamaT2IModel

    wrong = GridPositions(rows=8, row_stride=17, hidden=model.lm.config.hidden_size)
    with pytest.raises(ValueError, match="grid positions cover 137 offsets, layout has 273"):
        LlamaT2IModel("x", model.lm, model.vocab, model.layout, model._pixels, model.default_sampling,
                      grid=wrong)


@pytest.mark.parametrize(("text", "value"), [("false", False), ("True", True), ("0", False), ("yes", True)])
def test_boolean_train_flags_parse_words(text, value):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--grid-positions", text]).grid_positions is value


def test_boolean_train_flags_refuse_other_words(capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--grid-positions", "maybe"])
    assert "expected true or false, got 'maybe'" in capsys.readouterr().err


PLAIN = Vocabulary(caption_words(), 512, row_markers=16)
BOUND = Vocabulary(caption_words(), 512, row_markers=16, positions=POSITIONS)


def _names(vocab: Vocabulary, ids: list[int]) -> list[str]:
    inverse = {i: w for w, i in vocab._index.items()}
    return [inverse.get(i, "<unk>" if i == UNK else str(i)) for i in ids]


def test_bound_tokens_bind_each_phrase_to_its_place():
    ids = BOUND.word_ids("a large red circle at top left and a small blue square at center")
    assert _names(BOUND, ids) == ["large@top left", "red@top left", "circle@top left",
                                  "small@center", "blue@center", "square@center"]
    first = BOUND.code_end + BOUND.row_markers
    assert all(first <= i < BOUND.size for i in ids)  # their own range, after codes and row markers
    # the same word at another place is another token; at the same place, the same token
    assert BOUND.word_ids("a red circle at top left")[0] != BOUND.word_ids("a red circle at center")[0]
    assert BOUND.word_ids("a red circle at center")[0] == BOUND.word_ids("a red square at center")[0]


def test_bound_vocabulary_keeps_codes_and_row_markers_in_place():
    assert len(BOUND.bound_words) == 14 * 9  # 2 sizes + 8 colours + 4 shapes, at 9 places
    assert BOUND.size == PLAIN.size + 126
    assert (BOUND.code_start, BOUND.code_end) == (PLAIN.code_start, PLAIN.code_end)
    assert [BOUND.eol(r) for r in range(16)] == [PLAIN.eol(r) for r in range(16)]


def test_phrases_without_a_known_place_keep_plain_ids():
    assert BOUND.word_ids("a red circle at the top left") == PLAIN.word_ids("a red circle at the top left")
    assert BOUND.word_ids("hello world") == [UNK, UNK]
    mixed = _names(BOUND, BOUND.word_ids("a red circle at center and a blue blob"))
    assert mixed == ["red@center", "circle@center", "a", "blue", "<unk>"]
    assert BOUND.word_ids("") == [] and PLAIN.word_ids("a red circle at center")[0] < PLAIN.code_start


def test_every_generator_caption_is_fully_bound():
    for i in range(300):
        sample = make_sample(5, i)
        ids = BOUND.word_ids(sample.caption)
        assert len(ids) == 3 * len(sample.objects)
        assert all(i >= BOUND.code_end + BOUND.row_markers for i in ids)


@torch.no_grad()
def test_adding_bound_tokens_keeps_the_model_and_seeds_them_from_their_words():
    cfg = TrainConfig(hidden=32, intermediate=64, layers=1, heads=2)
    lm = build_lm(cfg, PLAIN, max_len=512).eval()
    ids, _ = sequences(["a large red circle at top left"], torch.zeros(1, 16, 16, dtype=torch.long), PLAIN,
                       torch.tensor([False]))
    before = lm(input_ids=ids).logits
    bound = add_bound_words(lm, PLAIN)
    assert bound.positions == POSITIONS and lm.config.vocab_size == bound.size
    after = lm(input_ids=ids).logits
    torch.testing.assert_close(after[..., : PLAIN.size], before)  # old ids: same function
    table = lm.get_input_embeddings().weight
    red, top, left = (PLAIN.word_ids(w)[0] for w in ("red", "top", "left"))
    new = bound.word_ids("a red circle at top left")[0]
    torch.testing.assert_close(table[new], table[red] + (table[top] + table[left]) / 2)
