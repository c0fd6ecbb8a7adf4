"""Making a loaded convolutional codec faster to run, without changing what it computes.

Two rewrites, both applied once, after the weights are loaded (the published checkpoints keep
their own key layout, so they must be read into the model as the library builds it):

* :func:`remove_weight_norms`: weight normalisation (``w = g · v / ‖v‖``) is a training-time
  reparametrisation. Left in place it recomputes every convolution's weight at every call;
  removing it stores ``w`` once. The weights are computed by the same function the forward
  pass calls, so the outputs do not change. The state dict then holds ``weight`` instead of
  ``weight_g``/``weight_v``: a codec is frozen here, so nothing trains the pair again.
* :func:`use_channels_last_convs`: oneDNN, torch's CPU convolution library, is several times
  faster on time-major ("channels-last") activations than on the ``[b, c, l]`` layout a 1-d
  convolution asks for, and it offers that layout only to 2-d convolutions. Each ``Conv1d`` and
  ``ConvTranspose1d`` becomes a subclass that runs its own weights as a ``1 × k`` 2-d convolution
  on channels-last input. Its output stays channels-last in memory (still shaped ``[b, c, l]``),
  element-wise layers keep that layout, so activations are never copied between layers. The
  parameters and their names are unchanged; only the kernel (and so the order of float
  additions) differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize


def remove_weight_norms(module: nn.Module) -> int:
    """Fold every weight normalisation in ``module`` into a plain weight; the number folded.

    Handles both forms torch has: the old forward-pre-hook (``torch.nn.utils.weight_norm``,
    parameters ``weight_g``/``weight_v``) and the parametrisation
    (``torch.nn.utils.parametrizations.weight_norm``)."""
    folded = 0
    for sub in module.modules():
        for hook in list(sub._forward_pre_hooks.values()):
            if type(hook).__name__ == "WeightNorm":  # torch.nn.utils.weight_norm's hook
                torch.nn.utils.remove_weight_norm(sub, hook.name)
                folded += 1
        if parametrize.is_parametrized(sub):
            for name in list(sub.parametrizations.keys()):
                kinds = [type(p).__name__ for p in sub.parametrizations[name]]
                if kinds == ["_WeightNorm"]:
                    parametrize.remove_parametrizations(sub, name, leave_parametrized=True)
                    folded += 1
    return folded


def _to_channels_last(x: Tensor) -> Tensor:
    """``[b, c, l]`` → ``[b, c, 1, l]`` stored time-major (a view when ``x`` already is)."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


class ChannelsLastConv1d(nn.Conv1d):
    """A ``Conv1d`` computed as a ``1 × k`` channels-last 2-d convolution (same parameters)."""

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() != 3 or self.padding_mode != "zeros":
            return super().forward(input)
        padding = self.padding if isinstance(self.padding, str) else (0, self.padding[0])
        out = F.conv2d(_to_channels_last(input), self.weight.unsqueeze(2), self.bias,
                       (1, self.stride[0]), padding, (1, self.dilation[0]), self.groups)
        return out.squeeze(2)


class ChannelsLastConvTranspose1d(nn.ConvTranspose1d):
    """A ``ConvTranspose1d`` computed as a ``1 × k`` channels-last 2-d one (same parameters)."""

    def forward(self, input: Tensor, output_size: list[int] | None = None) -> Tensor:
        if input.dim() != 3 or output_size is not None or self.padding_mode != "zeros":
            return super().forward(input, output_size)
        out = F.conv_transpose2d(
            _to_channels_last(input), self.weight.unsqueeze(2), self.bias, (1, self.stride[0]),
            (0, self.padding[0]), (0, self.output_padding[0]), self.groups, (1, self.dilation[0]))
        return out.squeeze(2)


_CHANNELS_LAST = {nn.Conv1d: ChannelsLastConv1d, nn.ConvTranspose1d: ChannelsLastConvTranspose1d}


def use_channels_last_convs(module: nn.Module) -> int:
    """Run every plain ``Conv1d``/``ConvTranspose1d`` in ``module`` channels-last; how many.

    The modules keep their parameters, buffers and names (the class of each is swapped for its
    subclass above), so the state dict is unchanged. Apply after weight normalisation is removed:
    a weight-norm hook still recomputes the weight before the subclass's forward runs."""
    swapped = 0
    for sub in module.modules():
        faster = _CHANNELS_LAST.get(type(sub))
        if faster is not None:
            sub.__class__ = faster
            swapped += 1
    return swapped
