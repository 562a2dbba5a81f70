"""rnnlib.charlm: vocabulary, batches, sampling, checkpoints and a short training run."""

import math

import numpy as np
import pytest
import torch

import rnnlib.torch as rtorch
from rnnlib.charlm import (
    CharLSTM,
    CharVocab,
    batches,
    evaluate,
    load_checkpoint,
    load_corpus,
    sample,
    save_checkpoint,
    train_charlm,
)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global random state (torch and numpy's legacy generator)."""
    torch.manual_seed(0)
    np.random.seed(0)


TEXT = "the cat sat on the mat; σ(x) ⊙ c̃_t\n"


def small_model(vocab_size: int, seed: int = 0, hidden_size: int = 16) -> CharLSTM:
    torch.manual_seed(seed)
    return CharLSTM(vocab_size, hidden_size=hidden_size)


# --- corpus and vocabulary --------------------------------------------------------------------------------


def test_load_corpus_joins_files_in_order(tmp_path):
    (tmp_path / "a.md").write_text("first ⊙", encoding="utf-8")
    (tmp_path / "b.md").write_text("second", encoding="utf-8")
    assert load_corpus([tmp_path / "b.md", tmp_path / "a.md"]) == "second\n\nfirst ⊙"


def test_load_corpus_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.md"):
        load_corpus([tmp_path / "nope.md"])
    with pytest.raises(ValueError, match="at least one"):
        load_corpus([])


def test_vocab_round_trip():
    vocab = CharVocab(TEXT)
    assert len(vocab) == len(set(TEXT))
    ids = vocab.encode(TEXT)
    assert ids.dtype == torch.long and ids.shape == (len(TEXT),)
    assert vocab.decode(ids) == TEXT
    assert vocab.decode(ids.tolist()) == TEXT
    # distinct characters get distinct ids in [0, V)
    assert sorted(set(ids.tolist())) == list(range(len(vocab)))


def test_vocab_errors():
    vocab = CharVocab("abc")
    with pytest.raises(ValueError, match="'z'"):
        vocab.encode("abz")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        vocab.decode([0, 3])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        vocab.decode([-1])
    with pytest.raises(ValueError, match="empty"):
        CharVocab("")


# --- batches ----------------------------------------------------------------------------------------------


def test_batches_targets_are_inputs_shifted_by_one():
    data = torch.arange(1000)  # each id is its own position, so shifts are visible in the values
    seq_len, batch_size = 7, 10
    pairs = list(batches(data, seq_len, batch_size, torch.Generator().manual_seed(0)))
    starts = []
    for x, y in pairs:
        assert x.shape == y.shape and x.shape[0] == seq_len and x.shape[1] <= batch_size
        assert torch.equal(y, x + 1)  # the next character of every position
        assert torch.equal(x[1:], y[:-1])  # consecutive characters along time
        starts += x[0].tolist()
    # the windows are the non-overlapping cuts of the text, each visited once, in a shuffled order: a window
    # starting at s needs targets up to s + 7 ≤ 999, so the starts are 0, 7, ..., 987 = 7·141 (994 > 992)
    assert sorted(starts) == [7 * k for k in range(142)]
    assert starts != sorted(starts)
    assert [b.shape[1] for b, _ in pairs] == [10] * 14 + [2]


def test_batches_are_reproducible_and_validated():
    data = torch.arange(200)
    a = [x for x, _ in batches(data, 9, 4, torch.Generator().manual_seed(3))]
    b = [x for x, _ in batches(data, 9, 4, torch.Generator().manual_seed(3))]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        next(batches(data.reshape(20, 10), 5, 2))
    with pytest.raises(ValueError, match="at least seq_len"):
        next(batches(data[:5], 5, 2))


# --- model and sampling -----------------------------------------------------------------------------------


def test_model_uses_rnnlib_lstm_and_gives_logits():
    model = small_model(5)
    assert isinstance(model.lstm, rtorch.LSTM)
    logits, (h, c) = model(torch.randint(0, 5, (6, 3)))
    assert logits.shape == (6, 3, 5) and h.shape == c.shape == (1, 3, 16)


def greedy_reference(model: CharLSTM, vocab: CharVocab, prime: str, n: int) -> str:
    """Argmax decoding written independently: rerun the whole sequence at each step."""
    ids = vocab.encode(prime).tolist()
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor(ids)[:, None])
            ids.append(int(logits[-1, 0].argmax()))
    return vocab.decode(ids)


def test_sampling_at_low_temperature_is_argmax():
    vocab = CharVocab(TEXT)
    model = small_model(len(vocab), seed=1)
    greedy = greedy_reference(model, vocab, "the ", 30)
    for seed in range(3):
        assert sample(model, vocab, "the ", 30, temperature=1e-4, seed=seed) == greedy


def test_sampling_is_deterministic_under_a_seed():
    vocab = CharVocab(TEXT)
    model = small_model(len(vocab))
    a = sample(model, vocab, "cat", 60, temperature=1.0, seed=7)
    assert a.startswith("cat") and len(a) == 63
    assert sample(model, vocab, "cat", 60, temperature=1.0, seed=7) == a
    assert sample(model, vocab, "cat", 60, temperature=1.0, seed=8) != a


def test_sampling_follows_the_tempered_softmax():
    vocab = CharVocab("abcd")
    model = small_model(4, seed=2)
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([1.0, 0.0, -0.5, 0.5]))
        logits, _ = model(vocab.encode("ab")[:, None])
    for temperature in (0.5, 2.0):
        expected = torch.softmax(logits[-1, 0] / temperature, dim=-1)
        n = 800
        counts = torch.zeros(4)
        for seed in range(n):
            counts[vocab.index[sample(model, vocab, "ab", 1, temperature, seed=seed)[-1]]] += 1
        assert torch.allclose(counts / n, expected, atol=0.05), (temperature, counts / n, expected)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_temperature_must_be_positive(temperature):
    vocab = CharVocab("abc")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample(small_model(3), vocab, "a", 5, temperature=temperature)


def test_sample_rejects_bad_prime():
    vocab = CharVocab("abc")
    with pytest.raises(ValueError, match="prime"):
        sample(small_model(3), vocab, "", 5)
    with pytest.raises(ValueError, match="'x'"):
        sample(small_model(3), vocab, "ax", 5)


# --- checkpoints --------------------------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    vocab = CharVocab(TEXT)
    model = small_model(len(vocab), seed=4)
    path = tmp_path / "char.pt"
    save_checkpoint(path, model, vocab)
    restored, restored_vocab = load_checkpoint(path)
    assert restored is not model and restored_vocab.chars == vocab.chars
    x = vocab.encode(TEXT)[:, None]
    with torch.no_grad():
        assert torch.equal(restored(x)[0], model(x)[0])
    before = sample(model, vocab, "the", 40, temperature=0.8, seed=5)
    assert sample(restored, restored_vocab, "the", 40, temperature=0.8, seed=5) == before


def test_load_checkpoint_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


# --- training ---------------------------------------------------------------------------------------------


def test_short_training_lowers_the_loss():
    text = "the quick brown fox jumps. " * 40
    vocab = CharVocab(text)
    model = small_model(len(vocab), hidden_size=32)
    epochs_seen = []
    losses = train_charlm(
        model, vocab.encode(text), epochs=4, seq_len=24, batch_size=8, lr=1e-2, seed=0,
        on_epoch_end=lambda epoch, m: epochs_seen.append(epoch), progress=False,
    )
    # 1080 characters: 44 windows of 24 with a next character for every position (44·24 + 1 ≤ 1080, a 45th
    # would need 1081), 8 per batch: 6 steps per epoch, 4 epochs
    assert len(text) == 1080 and len(losses) == 24
    assert epochs_seen == [0, 1, 2, 3]
    assert abs(losses[0] - math.log(len(vocab))) < 0.5  # starts near a uniform guess
    assert sum(losses[-3:]) / 3 < 0.3 * losses[0]
    # it learned the sentence: greedy decoding continues it (each character follows from the last two)
    assert sample(model, vocab, "the ", 30, temperature=1e-4) == text[: 4 + 30]


def test_evaluate_is_the_mean_cross_entropy():
    vocab = CharVocab(TEXT)
    data = vocab.encode(TEXT * 5)
    model = small_model(len(vocab))
    with torch.no_grad():  # constant logits: every character gets probability 1/V, a loss of ln V
        model.head.weight.zero_()
        model.head.bias.fill_(0.3)
    assert evaluate(model, data, seq_len=11, batch_size=4) == pytest.approx(math.log(len(vocab)), rel=1e-6)
    with torch.no_grad():  # V-way softmax of the bias alone: the loss is the mean of -log p over the targets
        model.head.bias.copy_(torch.linspace(-1, 1, len(vocab)))
    log_p = torch.log_softmax(model.head.bias, dim=0)
    # 180 characters, windows of 11 from position 0 with their targets one further: 16 windows (16·11 + 1 =
    # 177 ≤ 180, a 17th would need position 187), so the targets are characters 1 .. 176
    assert len(data) == 180
    targets = data[1:177]
    expected = -log_p[targets].mean().item()
    assert evaluate(model, data, seq_len=11, batch_size=4) == pytest.approx(expected, rel=1e-5)


def test_max_steps_stops_training():
    text = "abcd" * 100
    vocab = CharVocab(text)
    calls = []
    losses = train_charlm(
        small_model(4), vocab.encode(text), epochs=5, seq_len=10, batch_size=4, max_steps=7,
        on_epoch_end=lambda epoch, m: calls.append(epoch), progress=False,
    )
    assert len(losses) == 7 and calls == []
