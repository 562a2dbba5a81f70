"""rnnlib: the library of the open course on recurrent networks.

- ``rnnlib.equations``  the gate equations, written once for numpy and torch
- ``rnnlib.numpy``      float64 reference: forward and backpropagation through time
- ``rnnlib.torch``      drop-in replacements for torch.nn.RNN/LSTM/GRU (same state_dict)
- ``rnnlib.vanishing``  the W^n experiments and gradient-flow measurements
- ``rnnlib.tasks``      long-lag tasks (adding problem, copy task) and a small trainer
- ``rnnlib.plots``      matplotlib helpers shared by the book
"""

__version__ = "0.1.0"
