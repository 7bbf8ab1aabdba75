"""Running a batch-first ``nn.LSTM`` / ``nn.GRU`` over right-padded rows without reading the padding.

:func:`run_masked` gives what packed sequences give (each row read only over its first
``mask.sum(1)`` positions, in both directions), but on the CPU through torch's kernels for padded
``(B, S, F)`` input: oneDNN's LSTM (forward and backward), and a GRU path faster than the packed
one. A ``PackedSequence`` runs one cell at a time, and its backward allocates and adds a
zero-filled gradient for every gate slice of every time step (40% of a QA training step in a
profile taken while building this, not kept). Forward and backward of one bidirectional layer over a QA ``--preset real`` batch
(``(35, 231, 256)`` input, 2x128 units, 40% padding, which this path reads and packing skips),
2 threads of an AVX-512 CPU: LSTM 597 ms packed against 169 ms here (3.5x; 4.9x under bf16
autocast), GRU 535 against 245 ms (2.2x) (``python benchmarks/masked_rnn.py``). An epoch of the
QA preset went from about 10 to about 4 minutes (the README's Results; a profiled training step
from 3.2 to 1.1 s with the heads' dropout also moved to :mod:`s2s_tasks.nn.dropout`, measured
while building, not kept).

How padding is kept out: the forward direction reads the padded rows as they are (a right pad
comes after everything a real position has read), and the backward direction reads each row
reversed within its own length, ``x[len-1], ..., x[0]``, then pads, and its outputs are flipped
back the same way. Outputs after a row's length are zero.

On CUDA this path is the default too: on an H200 (torch 2.11, cuDNN) the same layer at the same
shape took 4.0-4.5 ms against 24.6-26.4 ms packed, 5.6-6.3x for LSTM and GRU in float32 and
bf16 autocast (``python benchmarks/masked_rnn.py --device cuda``; packing copies the lengths
to the host every call and sorts the rows: which part costs what was not profiled). The packed
path stays available as ``packed=True``.
"""

from __future__ import annotations

import warnings
from typing import List, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .dropout import dropout

# cuDNN warns on every call that one direction's weights of one layer are not the module's single
# flat buffer (it compacts them, a copy of one layer's weights); that copy is inside the measured
# 4 ms above. Scoped to warnings raised from this module: users' own RNNs still warn.
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk of memory",
                        category=UserWarning, module=__name__)


def reverse_within_length(lengths: Tensor, length: int) -> Tensor:
    """``(B, S)`` gather indices that reverse the first ``lengths[b]`` positions of row ``b`` and
    keep the rest in place (an involution: applying it twice is the identity)."""
    positions = torch.arange(length, device=lengths.device).expand(lengths.numel(), length)
    reversed_ = lengths[:, None] - 1 - positions
    return torch.where(reversed_ >= 0, reversed_, positions)


def _layer_weights(rnn: nn.RNNBase, layer: int, suffix: str) -> List[Tensor]:
    names = [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"]
    if rnn.bias:
        names += [f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"]
    return [getattr(rnn, name) for name in names]


def _run_one_direction(rnn: nn.RNNBase, inputs: Tensor, weights: List[Tensor]) -> Tensor:
    """One layer, one direction, over padded ``inputs (B, S, F)`` -> ``(B, S, H)``: the op
    ``nn.LSTM.forward`` / ``nn.GRU.forward`` call, with one direction's weights of one layer."""
    zeros = inputs.new_zeros(1, inputs.size(0), rnn.hidden_size)
    if isinstance(rnn, nn.LSTM):
        return torch._VF.lstm(inputs, (zeros, zeros), weights, rnn.bias, 1, 0.0, rnn.training, False, True)[0]
    return torch._VF.gru(inputs, zeros, weights, rnn.bias, 1, 0.0, rnn.training, False, True)[0]


def _run_packed(rnn: nn.RNNBase, inputs: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
    packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
    packed_out, hidden = rnn(packed)
    outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=inputs.size(1))
    return outputs, hidden[0] if isinstance(hidden, tuple) else hidden


def run_masked(rnn: nn.RNNBase, inputs: Tensor, mask: Tensor, packed: bool = False) -> Tuple[Tensor, Tensor]:
    """Run a batch-first ``rnn`` (``nn.LSTM`` or ``nn.GRU``, any layers, one or two directions)
    over ``inputs (B, S, F)``, reading only the first ``mask.sum(1)`` positions of each row.

    Returns ``outputs (B, S, directions * H)``, zero after each row's length, and the final
    hidden states ``h_n (layers * directions, B, H)`` as ``nn.LSTM`` orders them (``h`` only for
    an LSTM: nothing here uses the cell state). A row of length 0 reads its first position, as
    ``pack_padded_sequence`` (which rejects length 0) would need. ``packed=True`` runs
    ``PackedSequence`` instead, with the same results (slower on the CPU and on CUDA, above).
    """
    if getattr(rnn, "proj_size", 0):
        raise ValueError("run_masked does not support an LSTM with proj_size")
    lengths = mask.sum(dim=1).clamp(min=1)
    if packed:
        outputs, final = _run_packed(rnn, inputs, lengths)
        return outputs.masked_fill(~mask[:, :, None], 0.0), final
    batch, length = mask.shape
    rows = torch.arange(batch, device=inputs.device)
    last = lengths - 1
    flip = None
    if rnn.bidirectional:
        flip = reverse_within_length(lengths, length)[:, :, None]
    hidden: List[Tensor] = []
    layer_input = inputs
    for layer in range(rnn.num_layers):
        forward = _run_one_direction(rnn, layer_input, _layer_weights(rnn, layer, ""))
        hidden.append(forward[rows, last])
        if flip is None:
            outputs = forward
        else:
            flipped_input = layer_input.gather(1, flip.expand(-1, -1, layer_input.size(-1)))
            backward = _run_one_direction(rnn, flipped_input, _layer_weights(rnn, layer, "_reverse"))
            backward = backward.gather(1, flip.expand(-1, -1, backward.size(-1)))
            hidden.append(backward[:, 0])
            outputs = torch.cat([forward, backward], dim=-1)
        if layer < rnn.num_layers - 1 and rnn.dropout > 0:
            outputs = dropout(outputs, rnn.dropout, rnn.training)
        layer_input = outputs
    outputs = outputs.masked_fill(~mask[:, :, None], 0.0)
    return outputs, torch.stack(hidden)
