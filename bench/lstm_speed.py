"""Speed of rnnlib against torch.nn on this machine: ratios measured in the same run, printed, never asserted.

    .venv/bin/python bench/lstm_speed.py [--repeats 20]

Rows: rnnlib.numpy LSTM forward and forward+backward vs torch.nn.LSTM (float32 and float64), rnnlib.torch
vs torch.nn, and GRU vs LSTM per step. The numpy forward's GFLOP/s is compared with one large matmul's,
the GEMM peak measured in the same run. Times are medians over repeats; ratio < 1 means rnnlib is faster.
"""

import argparse
import os
import statistics
import time

import numpy as np
import torch

from rnnlib import numpy as rnp
from rnnlib import torch as rtorch

T, B, D, H = 100, 32, 64, 128


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_peak(dtype, repeats: int) -> float:
    """GFLOP/s of one (1024 × 1024) @ (1024 × 1024) product, the machine's practical matmul ceiling."""
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(dtype)
    return 2 * 1024**3 / median_time(lambda: a @ a, repeats) / 1e9


def numpy_case(mode: str, dtype, x: np.ndarray, module: torch.nn.Module):
    params = {k: v.astype(dtype) for k, v in rnp.params_from_torch(module).items()}
    forward = {
        "lstm": lambda: rnp.lstm_forward(x, None, None, params),
        "gru": lambda: rnp.gru_forward(x, None, params),
    }
    backward = {"lstm": rnp.lstm_backward, "gru": rnp.gru_backward}[mode]
    dhs = np.ones((T, B, H), dtype)

    def forward_backward():
        backward(dhs, forward[mode]()[-1])

    return forward[mode], forward_backward


def torch_case(module: torch.nn.Module, x: torch.Tensor):
    def forward():
        with torch.no_grad():
            module(x)

    def forward_backward():
        module.zero_grad(set_to_none=True)
        module(x)[0].sum().backward()

    return forward, forward_backward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    repeats = parser.parse_args().repeats
    print(f"T={T} B={B} D={D} H={H}; torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"numpy {np.__version__}, {os.cpu_count()} CPUs; medians of {repeats} repeats")
    print(f"{'case':44s} {'ours ms':>9s} {'ref ms':>9s} {'ratio':>7s}")

    def row(name: str, ours: float, ref: float) -> None:
        print(f"{name:44s} {ours * 1e3:9.2f} {ref * 1e3:9.2f} {ours / ref:7.2f}")

    flops = 2 * T * B * 4 * H * (D + H)  # input and recurrent matrix products of the LSTM forward
    for dtype, tdtype in [(np.float32, torch.float32), (np.float64, torch.float64)]:
        torch.manual_seed(0)
        x_t = torch.randn(T, B, D, dtype=tdtype)
        x = x_t.numpy()
        per_mode = {}
        classes = [("lstm", torch.nn.LSTM, rtorch.LSTM), ("gru", torch.nn.GRU, rtorch.GRU)]
        for mode, ref_cls, our_cls in classes:
            ref = ref_cls(D, H, dtype=tdtype)
            ours = our_cls(D, H, dtype=tdtype)
            ours.load_state_dict(ref.state_dict())
            np_fwd, np_fb = numpy_case(mode, dtype, x, ref)
            ref_fwd, ref_fb = torch_case(ref, x_t)
            our_fwd, our_fb = torch_case(ours, x_t)
            per_mode[mode] = {
                "numpy fwd": median_time(np_fwd, repeats),
                "numpy fwd+bwd": median_time(np_fb, repeats),
                "torch.nn fwd": median_time(ref_fwd, repeats),
                "torch.nn fwd+bwd": median_time(ref_fb, repeats),
                "rnnlib.torch fwd": median_time(our_fwd, repeats),
                "rnnlib.torch fwd+bwd": median_time(our_fb, repeats),
            }
        name = np.dtype(dtype).name
        lstm, gru = per_mode["lstm"], per_mode["gru"]
        row(f"{name} numpy LSTM fwd / torch.nn.LSTM fwd", lstm["numpy fwd"], lstm["torch.nn fwd"])
        row(f"{name} numpy LSTM fwd+bwd / torch.nn fwd+bwd", lstm["numpy fwd+bwd"], lstm["torch.nn fwd+bwd"])
        row(f"{name} rnnlib.torch LSTM fwd / torch.nn fwd", lstm["rnnlib.torch fwd"], lstm["torch.nn fwd"])
        row(f"{name} rnnlib.torch fwd+bwd / torch.nn", lstm["rnnlib.torch fwd+bwd"], lstm["torch.nn fwd+bwd"])
        row(f"{name} numpy GRU fwd / numpy LSTM fwd", gru["numpy fwd"], lstm["numpy fwd"])
        row(f"{name} torch.nn GRU fwd / torch.nn LSTM fwd", gru["torch.nn fwd"], lstm["torch.nn fwd"])
        achieved, peak = flops / lstm["numpy fwd"] / 1e9, gemm_peak(dtype, repeats)
        print(f"{name} numpy LSTM fwd: {achieved:.1f} GFLOP/s of matmul work, GEMM peak {peak:.1f} GFLOP/s "
              f"({achieved / peak:.0%} of peak)")


if __name__ == "__main__":
    main()
