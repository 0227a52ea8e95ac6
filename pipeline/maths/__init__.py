"""The measurements' mathematics: pure functions over tensors and arrays, with explicit axes and
no I/O. The stage modules (``pipeline.extract``, ``pipeline.reduce``, …) read and write stores on
top of them.

* ``decomposition``: the attractive/repulsive decomposition at h and κ (Gradient Dissent;
  Godey & Artzi), in one chunked pass over the vocabulary (torch).
* ``parameters``: the parameter-gradient decomposition and D_W's sums, back-propagated through a
  model's body with hooks; the output layer in closed form (torch).
* ``bottleneck``: the rank of the logit gradients (Godey & Artzi; torch).
* ``geometry``: the output layer's spectrum and common direction, the hidden states'
  anisotropy, W-error (Godey, de la Clergerie & Sagot; torch, numpy).
* ``interference``: D and M of loss changes, D_W of a weight (Zero-sum learning).
* ``binning``: per-frequency-bin means, quantiles and loss-change sums (numpy kernels).
* ``frequency``: log2 frequency bins (Gradient Dissent §2).
* ``saturation``: the saturation rule (Gradient Dissent §2).
* ``bnsl``: the broken power law and its fit (Zero-sum learning Eq. 1; lmfit).
"""
