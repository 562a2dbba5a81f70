"""Speed of rnnlib against torch.nn on this machine: ratios measured in the same run, printed, never asserted.

    .venv/bin/python bench/lstm_speed.py [--repeats 20] [--threads 1]

``--threads`` is torch's thread count and NumPy's BLAS's (threadpoolctl): both sides get the same cores.

CPU rows (T100 B32 D64 H128, float32 and float64): rnnlib.torch LSTM/GRU forward and forward+backward vs
torch.nn (goal: forward+backward ≤ 1.5×), rnnlib.numpy LSTM forward (goal ≤ 1.5× in float32) and
forward+backward vs torch.nn, and the numpy forward's GFLOP/s against one large matmul's (the GEMM peak).
When CUDA is present, a GPU section: rnnlib.torch vs torch.nn (cuDNN) forward+backward in float32 at the
issue's sizes (goal ≤ 3× at T100 B256 D256 H512), with the first call's time (warm-up) shown apart, and
the book's char-LSTM recipe (H=128, seq_len 50, batch 32; 30 steps of train_charlm) on the GPU against the
CPU (goal: the GPU faster).
Times are medians over repeats, the cases compared taking turns within each repeat (so a busy neighbour
slows both sides alike); ratio < 1 means rnnlib is faster.
"""

import argparse
import os
import statistics
import time

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from rnnlib import numpy as rnp
from rnnlib import torch as rtorch

T, B, D, H = 100, 32, 64, 128
GPU_SIZES = [(50, 32, 80, 128), (100, 256, 256, 512)]  # (T, B, D, H)


def median_time(fn, repeats: int, sync=lambda: None) -> tuple[float, float]:
    """(median seconds of fn over repeats, seconds of the first call, warm-up included)."""
    start = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), first


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable, timed in turns: one call of each per repeat, after one warm-up."""
    for fn in fns.values():
        fn()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def gemm_peak(dtype, repeats: int) -> float:
    """GFLOP/s of one (1024 × 1024) @ (1024 × 1024) product, the machine's practical matmul ceiling."""
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(dtype)
    return 2 * 1024**3 / median_time(lambda: a @ a, repeats)[0] / 1e9


def torch_case(module: torch.nn.Module, x: torch.Tensor):
    def forward():
        with torch.no_grad():
            module(x)

    def forward_backward():
        module.zero_grad(set_to_none=True)
        module(x)[0].sum().backward()

    return forward, forward_backward


def numpy_case(mode: str, dtype, x: np.ndarray, module: torch.nn.Module):
    params = {k: v.astype(dtype) for k, v in rnp.params_from_torch(module).items()}
    forward = {
        "lstm": lambda: rnp.lstm_forward(x, None, None, params),
        "gru": lambda: rnp.gru_forward(x, None, params),
    }
    backward = {"lstm": rnp.lstm_backward, "gru": rnp.gru_backward}[mode]
    dhs = np.ones(x.shape[:2] + (module.hidden_size,), dtype)
    return forward[mode], lambda: backward(dhs, forward[mode]()[-1])


def row(name: str, ours: float, ref: float, goal: float | None = None) -> None:
    mark = "" if goal is None else f"  goal ≤ {goal:g}: {'met' if ours / ref <= goal else 'NOT met'}"
    print(f"{name:46s} {ours * 1e3:9.2f} {ref * 1e3:9.2f} {ours / ref:7.2f}{mark}")


def cpu_section(repeats: int) -> None:
    pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
    blas = ", ".join(f"{p['internal_api']} {p['num_threads']}" for p in pools)
    print(f"CPU, T={T} B={B} D={D} H={H}: {torch.get_num_threads()} torch thread(s), NumPy's BLAS threads: "
          f"{blas}; {os.cpu_count()} CPUs")
    print(f"{'case':46s} {'ours ms':>9s} {'ref ms':>9s} {'ratio':>7s}")
    flops = 2 * T * B * 4 * H * (D + H)  # input and recurrent matrix products of the LSTM forward
    for dtype, tdtype in [(np.float32, torch.float32), (np.float64, torch.float64)]:
        torch.manual_seed(0)
        x_t = torch.randn(T, B, D, dtype=tdtype)
        name = np.dtype(dtype).name
        times = {}
        for mode, ref_cls, our_cls in [
            ("lstm", torch.nn.LSTM, rtorch.LSTM),
            ("gru", torch.nn.GRU, rtorch.GRU),
        ]:
            ref = ref_cls(D, H, dtype=tdtype)
            ours = our_cls(D, H, dtype=tdtype)
            ours.load_state_dict(ref.state_dict())
            cases = {
                "numpy": numpy_case(mode, dtype, x_t.numpy(), ref),
                "torch.nn": torch_case(ref, x_t),
                "rnnlib.torch": torch_case(ours, x_t),
            }
            fns = {(mode, lib, "fwd"): fwd for lib, (fwd, _) in cases.items()}
            fns |= {(mode, lib, "fwd+bwd"): fb for lib, (_, fb) in cases.items()}
            times |= interleaved_medians(fns, repeats)
        for mode in ("lstm", "gru"):
            M = mode.upper()
            ref_fb, ref_fwd = times[mode, "torch.nn", "fwd+bwd"], times[mode, "torch.nn", "fwd"]
            row(
                f"{name} rnnlib.torch {M} fwd+bwd / torch.nn",
                times[mode, "rnnlib.torch", "fwd+bwd"],
                ref_fb,
                1.5,
            )
            row(f"{name} rnnlib.torch {M} fwd / torch.nn", times[mode, "rnnlib.torch", "fwd"], ref_fwd)
            row(f"{name} numpy {M} fwd / torch.nn fwd", times[mode, "numpy", "fwd"], ref_fwd,
                1.5 if dtype == np.float32 and mode == "lstm" else None)  # fmt: skip
            row(f"{name} numpy {M} fwd+bwd / torch.nn", times[mode, "numpy", "fwd+bwd"], ref_fb)
        achieved, peak = flops / times["lstm", "numpy", "fwd"] / 1e9, gemm_peak(dtype, repeats)
        print(f"{name} numpy LSTM fwd: {achieved:.1f} GFLOP/s of matmul work, GEMM peak {peak:.1f} GFLOP/s "
              f"({achieved / peak:.0%} of peak)")  # fmt: skip


def cuda_section(repeats: int, device: torch.device) -> None:
    """The GPU rows; ``device`` is "cuda" (another device only for a dry run of this code)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"\n{name}, torch {torch.__version__}, float32, forward+backward")
    print(f"{'case':46s} {'ours ms':>9s} {'ref ms':>9s} {'ratio':>7s}")
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    for T_, B_, D_, H_ in GPU_SIZES:
        for ref_cls, our_cls in [(torch.nn.LSTM, rtorch.LSTM), (torch.nn.GRU, rtorch.GRU)]:
            torch.manual_seed(0)
            ref = ref_cls(D_, H_, device=device)
            ours = our_cls(D_, H_, device=device)
            ours.load_state_dict(ref.state_dict())
            x = torch.randn(T_, B_, D_, device=device)
            (ref_t, ref_first), (our_t, our_first) = (
                median_time(torch_case(m, x)[1], repeats, sync) for m in (ref, ours)
            )
            goal = 3.0 if (T_, B_, D_, H_) == (100, 256, 256, 512) else None
            row(f"{ref_cls.__name__} T{T_} B{B_} D{D_} H{H_} / cuDNN", our_t, ref_t, goal)
            print(f"{'':46s} first call: ours {our_first * 1e3:.1f} ms, cuDNN {ref_first * 1e3:.1f} ms")
    gpu, cpu = charlm_recipe(device), charlm_recipe(torch.device("cpu"))
    print(f"{'char-LSTM recipe step, GPU / CPU':46s} {gpu * 1e3:9.2f} {cpu * 1e3:9.2f} {gpu / cpu:7.2f}"
          f"  goal < 1: {'met' if gpu < cpu else 'NOT met'}")  # fmt: skip


def charlm_recipe(device: torch.device, steps: int = 30) -> float:
    """Seconds per training step of the book's char-LSTM settings (H=128, seq_len 50, batch 32) on device."""
    from rnnlib.charlm import CharLSTM, train_charlm

    vocab_size = 80
    data = torch.randint(0, vocab_size, (200_000,), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = CharLSTM(vocab_size, hidden_size=128).to(device)
    settings = dict(seq_len=50, batch_size=32, lr=5e-3, progress=False)
    train_charlm(model, data, max_steps=3, **settings)  # warm-up
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    sync()
    start = time.perf_counter()
    train_charlm(model, data, max_steps=steps, **settings)
    sync()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch's and BLAS's CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, numpy {np.__version__}; medians of {args.repeats} repeats")
    with threadpool_limits(limits=args.threads, user_api="blas"):
        cpu_section(args.repeats)
    if torch.cuda.is_available():
        cuda_section(args.repeats, torch.device("cuda"))
    else:
        print("\nCUDA: not available on this machine; the GPU section is skipped")


if __name__ == "__main__":
    main()
