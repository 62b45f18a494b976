"""The organ-supervised residual-encoder U-Net (autoPET III winner, used by BIRTH).

It is dynamic-network-architectures' ``ResidualEncoderUNet`` with, beside the decoder's
``seg_layers``, a parallel ``organ_seg_layers``: one 1x1x1 convolution to 11 classes (background
+ 10 organs) per decoder stage, so organs are deeply supervised too. ``forward(x)`` returns only
the lesion logits, so nnU-Net's stock predictor works; ``forward(x, organ=True)`` returns
``(lesion, organ)``. The parameter names are those of the published networks
(``decoder.organ_seg_layers.{i}.weight``), so their checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import nn

NUM_ORGAN_CLASSES = 11  # background + 10 organs (SPEC section 7)


class ResidualEncoderUNetOrgan(ResidualEncoderUNet):
    def __init__(self, *args, num_organ_classes: int = NUM_ORGAN_CLASSES, **kwargs):
        super().__init__(*args, **kwargs)
        decoder = self.decoder
        conv_op = self.encoder.conv_op
        decoder.organ_seg_layers = nn.ModuleList(
            conv_op(seg.in_channels, num_organ_classes, 1, 1, 0, bias=True)
            for seg in decoder.seg_layers
        )

    #: set by organ-supervised trainers around a training step; never by a predictor
    organ_output: bool = False

    def forward(self, x: torch.Tensor, organ: bool = False):
        organ = organ or self.organ_output
        skips = self.encoder(x)
        dec = self.decoder
        lres = skips[-1]
        seg, org = [], []
        last = len(dec.stages) - 1
        for s in range(len(dec.stages)):
            h = dec.transpconvs[s](lres)
            h = torch.cat((h, skips[-(s + 2)]), 1)
            h = dec.stages[s](h)
            if dec.deep_supervision or s == last:
                seg.append(dec.seg_layers[s](h))
                if organ:
                    org.append(dec.organ_seg_layers[s](h))
            lres = h
        seg, org = seg[::-1], org[::-1]
        lesion = seg if dec.deep_supervision else seg[0]
        if not organ:
            return lesion
        return lesion, (org if dec.deep_supervision else org[0])
