"""A character-level language model: read text, learn to predict the next character, sample new text.

The pieces, in the order the book uses them:

- ``load_corpus(paths)``: the training text, one string.
- ``CharVocab``: characters <-> integer ids.
- ``batches(data, seq_len, batch_size)``: random windows of the text, targets shifted by one character.
- ``CharLSTM``: one-hot characters -> ``rnnlib.torch.LSTM`` -> a linear layer giving one logit per character.
- ``train_charlm(...)``: cross-entropy on every position, RMSprop, a tqdm progress bar;
  ``evaluate(...)``: the same loss on held-out text.
- ``sample(...)``: temperature sampling, one character at a time.
- ``save_checkpoint`` / ``load_checkpoint``: weights + vocabulary + model configuration in one file.

Shapes: T time steps, B batch, V vocabulary size, H hidden size. Tensors are time-major, like torch.nn.LSTM.
"""

import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from rnnlib.torch import LSTM


def load_corpus(paths: Iterable[str | Path]) -> str:
    """Concatenate the text files in `paths` (in the given order), separated by a blank line."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("load_corpus: expected at least one file path, got none")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"load_corpus: no such file(s): {', '.join(missing)}")
    text = "\n\n".join(p.read_text(encoding="utf-8") for p in paths)
    if not text:
        raise ValueError("load_corpus: the files are empty")
    return text


class CharVocab:
    """The sorted set of characters of a text; a character's id is its position in that list."""

    def __init__(self, text: str):
        if not text:
            raise ValueError("CharVocab: cannot build a vocabulary from an empty text")
        self.chars = sorted(set(text))
        self.index = {ch: i for i, ch in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        """text of length N -> ids (N,) int64. Characters outside the vocabulary are an error."""
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise ValueError(f"CharVocab.encode: characters not in the vocabulary: {unknown!r}")
        return torch.tensor([self.index[ch] for ch in text], dtype=torch.long)

    def decode(self, ids: Tensor | Iterable[int]) -> str:
        """ids (N,) -> text of length N."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        bad = [i for i in ids if not 0 <= i < len(self.chars)]
        if bad:
            raise ValueError(f"CharVocab.decode: ids must lie in [0, {len(self.chars)}), got {bad[:5]}")
        return "".join(self.chars[i] for i in ids)


def batches(
    data: Tensor, seq_len: int, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of training pairs from the encoded text data: (N,).

    The text is cut into non-overlapping windows of seq_len characters, visited in a random order.
    Yields (x, y), both (T, B) int64 with T = seq_len: y[t] is the character that follows x[t], so y is
    x shifted by one. The last batch may hold fewer than batch_size windows.
    """
    if data.dim() != 1:
        raise ValueError(f"batches: expected encoded text of shape (N,), got {tuple(data.shape)}")
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"batches: seq_len and batch_size must be >= 1, got {seq_len} and {batch_size}")
    if len(data) < seq_len + 1:
        raise ValueError(f"batches: need at least seq_len + 1 = {seq_len + 1} characters, got {len(data)}")
    starts = torch.arange(0, len(data) - seq_len, seq_len)
    starts = starts[torch.randperm(len(starts), generator=generator)]
    offsets = torch.arange(seq_len)
    for k in range(0, len(starts), batch_size):
        idx = starts[k : k + batch_size][None, :] + offsets[:, None]  # (T, B)
        yield data[idx], data[idx + 1]


class CharLSTM(nn.Module):
    """One-hot characters -> LSTM -> logits over the vocabulary.

    (Multiplying a one-hot vector by the LSTM's input weights picks one column: an embedding lookup.)
    """

    def __init__(self, vocab_size: int, hidden_size: int = 128, num_layers: int = 1):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_layers=num_layers)
        self.vocab_size = vocab_size
        self.lstm = LSTM(vocab_size, hidden_size, num_layers=num_layers)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None):
        """x: (T, B) character ids -> logits (T, B, V) and the LSTM state (h_n, c_n)."""
        one_hot = F.one_hot(x, self.vocab_size).to(self.head.weight.dtype)
        hs, state = self.lstm(one_hot, state)
        return self.head(hs), state


def next_char_loss(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of logits (T, B, V) against the next characters y (T, B), in nats per character."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction=reduction)


def train_charlm(
    model: CharLSTM,
    data: Tensor,
    *,
    epochs: int = 1,
    seq_len: int = 100,
    batch_size: int = 64,
    lr: float = 2e-3,
    clip: float = 5.0,
    max_steps: int | None = None,
    seed: int = 0,
    on_epoch_end: Callable[[int, CharLSTM], None] | None = None,
    progress: bool = True,
) -> list[float]:
    """Train on the encoded text data: (N,) with RMSprop; returns the loss of every step.

    The loss is the mean cross-entropy (nats per character) of predicting each next character. Gradients
    are clipped to norm `clip`. Training stops after `epochs` passes over the text or `max_steps` steps,
    whichever comes first; `on_epoch_end(epoch, model)` runs after each complete epoch (e.g. to print a
    sample and save a checkpoint). Runs on the device the model is on.
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=lr)
    n_windows = len(range(0, len(data) - seq_len, seq_len))  # as cut by batches()
    steps_per_epoch = math.ceil(n_windows / batch_size)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    losses: list[float] = []
    model.train()
    with tqdm(total=total, desc="training", disable=not progress) as bar:
        for epoch in range(epochs):
            for x, y in batches(data, seq_len, batch_size, generator):
                x, y = x.to(device), y.to(device)
                logits, _ = model(x)
                loss = next_char_loss(logits, y)
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
                losses.append(loss.item())
                bar.update()
                bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.3f}", refresh=False)
                if len(losses) == total:
                    break
            if on_epoch_end is not None and len(losses) == (epoch + 1) * steps_per_epoch:
                on_epoch_end(epoch, model)
            if len(losses) == total:
                break
    return losses


@torch.no_grad()
def evaluate(model: CharLSTM, data: Tensor, seq_len: int = 100, batch_size: int = 64) -> float:
    """Mean cross-entropy (nats per character) of predicting every next character of data: (N,)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in batches(data, seq_len, batch_size, torch.Generator().manual_seed(0)):
        logits, _ = model(x.to(device))
        total += next_char_loss(logits, y.to(device), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count


@torch.no_grad()
def sample(
    model: CharLSTM, vocab: CharVocab, prime: str, n_chars: int, temperature: float = 1.0, seed: int = 0
) -> str:
    """Continue the text `prime` by n_chars characters drawn one at a time; returns prime + continuation.

    Each character is drawn from softmax(logits / temperature): temperature < 1 sharpens the distribution
    towards the most likely character (greedy decoding in the limit), temperature > 1 flattens it.
    The draws use a CPU generator seeded with `seed`, so the same seed gives the same text.
    """
    if not temperature > 0:
        raise ValueError(f"sample: temperature must be > 0, got {temperature}")
    if not prime:
        raise ValueError("sample: prime must hold at least one character to start from")
    if n_chars < 0:
        raise ValueError(f"sample: n_chars must be >= 0, got {n_chars}")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    logits, state = model(vocab.encode(prime)[:, None].to(device))  # (T, 1, V)
    out = []
    for _ in range(n_chars):
        probs = torch.softmax(logits[-1, 0].double().cpu() / temperature, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=generator)  # (1,)
        out.append(nxt.item())
        logits, state = model(nxt[None, :].to(device), state)
    model.train(was_training)
    return prime + vocab.decode(out)


def save_checkpoint(path: str | Path, model: CharLSTM, vocab: CharVocab) -> None:
    """Write the weights, the vocabulary and the model's configuration to `path` (torch.save)."""
    ckpt = {"state_dict": model.state_dict(), "chars": "".join(vocab.chars), "config": model.config}
    torch.save(ckpt, path)


def load_checkpoint(path: str | Path, device: str | torch.device | None = None) -> tuple[CharLSTM, CharVocab]:
    """Rebuild the model and vocabulary saved by `save_checkpoint`, on `device` (default: CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file at {path}")
    ckpt = torch.load(path, map_location=device or "cpu", weights_only=True)
    vocab = CharVocab(ckpt["chars"])
    model = CharLSTM(**ckpt["config"]).to(device or "cpu")
    model.load_state_dict(ckpt["state_dict"])
    return model, vocab
