"""Long-lag tasks and a small trainer: where plain RNNs fail and gated cells succeed.

- ``adding_problem``: two channels, random values and a marker channel with exactly two 1s, one in each half
  of the sequence; the target is the sum of the two marked values (Hochreiter & Schmidhuber 1997; the
  version of Le, Jaitly & Hinton 2015). Always predicting 1 scores ``ADDING_BASELINE_MSE`` = 1/6.
- ``copy_task``: read ``length`` symbols, wait ``delay`` steps, then write the symbols back; the best guess
  without memory scores ``copy_baseline_loss``.
- ``SequenceModel``: an rnnlib.torch RNN/LSTM/GRU with a linear head on the last hidden state (or on every
  step); ``train`` (Adam, gradient clipping, seeded minibatches, tqdm bar, optional early stop) returns the
  loss history, ``evaluate`` the loss on a whole set.

Shapes are time-major like torch.nn: x (T, N, D); T time steps, N samples, D input channels. Targets are
y (N,) per sequence, or (T, N) per step for the copy task.
"""

import math
from statistics import fmean

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

import rnnlib.torch as rtorch

ADDING_BASELINE_MSE = 1 / 6  # MSE of always predicting 1: Var(u1 + u2) = 2 · 1/12 for u1, u2 ~ U(0, 1)
STOP_WINDOW = 20  # train(stop_below=...) looks at the mean loss of this many recent steps


def adding_problem(n_samples: int, seq_len: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The adding problem.  Returns x: (seq_len, n_samples, 2) and y: (n_samples,), float32.

    Channel 0 holds values ~ U(0, 1); channel 1 is 0 except for two 1s, one at a uniformly random step in
    the first half [0, T//2) and one in the second half [T//2, T). y is the sum of the two marked values.
    """
    if n_samples < 1 or seq_len < 2:
        raise ValueError(
            f"need n_samples >= 1 and seq_len >= 2, got n_samples={n_samples}, seq_len={seq_len}"
        )
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(seq_len, n_samples, generator=g)
    half = seq_len // 2
    first = torch.randint(0, half, (n_samples,), generator=g)
    second = torch.randint(half, seq_len, (n_samples,), generator=g)
    samples = torch.arange(n_samples)
    markers = torch.zeros(seq_len, n_samples)
    markers[first, samples] = 1.0
    markers[second, samples] = 1.0
    y = values[first, samples] + values[second, samples]
    return torch.stack([values, markers], dim=-1), y


def copy_task(
    n_samples: int, length: int = 5, delay: int = 20, n_symbols: int = 8, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """The copy (memory) task.  Returns x: (T, n_samples, n_symbols + 2) float32 one-hot and y: (T, n_samples)
    int64 class labels, with T = 2·length + delay.

    Input tokens: ``length`` random symbols 1..n_symbols, then delay − 1 blanks (0), a delimiter
    (n_symbols + 1) that says "now write", and ``length`` blanks. Target: blank (0) for the first
    length + delay steps, then the ``length`` symbols in their order. See ``copy_baseline_loss``.
    """
    if n_samples < 1 or length < 1 or delay < 1 or n_symbols < 1:
        raise ValueError(
            f"need n_samples, length, delay, n_symbols >= 1, got {n_samples}, {length}, {delay}, {n_symbols}"
        )
    g = torch.Generator().manual_seed(seed)
    symbols = torch.randint(1, n_symbols + 1, (length, n_samples), generator=g)
    tokens = torch.zeros(2 * length + delay, n_samples, dtype=torch.long)
    tokens[:length] = symbols
    tokens[length + delay - 1] = n_symbols + 1  # the delimiter
    y = torch.zeros_like(tokens)
    y[length + delay :] = symbols
    return F.one_hot(tokens, n_symbols + 2).float(), y


def copy_baseline_loss(length: int, delay: int, n_symbols: int) -> float:
    """Cross-entropy per step of the best memoryless guess on the copy task: blank for the first
    length + delay steps (loss 0), uniform over the symbols for the last ``length`` (loss ln n_symbols)."""
    return length * math.log(n_symbols) / (2 * length + delay)


class SequenceModel(nn.Module):
    """An rnnlib.torch RNN (tanh), LSTM or GRU with a linear head.

    forward(x: (T, B, input_size)) -> (B, output_size) from the last hidden state h_T, or
    (T, B, output_size) from every h_t if ``every_step``. ``seed`` (optional) initialises the weights under
    ``torch.manual_seed(seed)`` without touching the global random state. ``forget_bias`` (LSTM only) is
    added to the forget gate's bias, to start with the gate more open.
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        output_size: int,
        every_step: bool = False,
        seed: int | None = None,
        forget_bias: float = 0.0,
    ) -> None:
        super().__init__()
        self.cell, self.every_step = cell, every_step
        with torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.rnn = rtorch.network(cell, input_size, hidden_size, forget_bias=forget_bias)
            self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor) -> Tensor:
        hs, _ = self.rnn(x)  # (T, B, H)
        return self.head(hs if self.every_step else hs[-1])


def loss_fn(output: Tensor, y: Tensor) -> Tensor:
    """Mean squared error for float targets (output reshaped to y's shape), cross-entropy for int targets
    (output (..., C), y (...))."""
    if y.is_floating_point():
        if output.numel() != y.numel():
            raise ValueError(
                f"output {tuple(output.shape)} does not match regression target {tuple(y.shape)}"
            )
        return F.mse_loss(output.reshape(y.shape), y)
    if output.shape[:-1] != y.shape:
        raise ValueError(
            f"output {tuple(output.shape)} must be target {tuple(y.shape)} plus a class dimension"
        )
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), y.reshape(-1))


def train(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    steps: int,
    lr: float = 1e-2,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    clip: float | None = 1.0,
    optimizer: str = "adam",
    stop_below: float | None = None,
) -> list[float]:
    """Train ``model`` on random minibatches of (x: (T, N, D), y) for ``steps`` updates.

    y holds one target per sequence, (N, ...), or, for a model with ``every_step`` set, one per step,
    (T, N, ...) like the output of ``copy_task``. Adam (or "rmsprop"/"sgd") with learning rate ``lr``;
    gradients are clipped to norm ``clip`` (None: no clipping). Minibatches are drawn with a generator
    seeded by ``seed``, so a model built under a fixed seed trains the same way every time. With
    ``stop_below``, training ends early once the mean loss of the last ``STOP_WINDOW`` steps is below it.
    Returns the loss of every step taken (``loss_fn``).
    """
    per_step = getattr(model, "every_step", False)
    sample_dim = 1 if per_step else 0  # where y keeps its N samples
    expected = x.shape[:2] if per_step else x.shape[1:2]
    if x.dim() != 3 or y.shape[: sample_dim + 1] != expected:
        targets = "(T, N, ...) for a model with every_step" if per_step else "(N, ...)"
        raise ValueError(
            f"need x: (T, N, D) and y: {targets} with the same N, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if steps < 1 or not 1 <= batch_size <= x.shape[1]:
        raise ValueError(f"need steps >= 1 and 1 <= batch_size <= N={x.shape[1]}, got {steps}, {batch_size}")
    optimizers = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}
    if optimizer not in optimizers:
        raise ValueError(f"optimizer must be one of {sorted(optimizers)}, got {optimizer!r}")
    opt = optimizers[optimizer](model.parameters(), lr=lr)
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    with tqdm(
        range(steps), desc=f"training {getattr(model, 'cell', '')}".strip(), disable=not progress
    ) as bar:
        for _ in bar:
            idx = torch.randint(0, x.shape[1], (batch_size,), generator=g)
            x_batch = x[:, idx].to(device)
            y_batch = y.index_select(sample_dim, idx.to(y.device)).to(device)
            loss = loss_fn(model(x_batch), y_batch)
            opt.zero_grad()
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
            recent = losses[-STOP_WINDOW:]
            if stop_below is not None and len(recent) == STOP_WINDOW and fmean(recent) < stop_below:
                break
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """The loss (``loss_fn``) of ``model`` on all of x: (T, N, D) and y: (N, ...) (or (T, N, ...) for a
    model with ``every_step``), without gradients."""
    device = next(model.parameters()).device
    model.eval()
    return loss_fn(model(x.to(device)), y.to(device)).item()
