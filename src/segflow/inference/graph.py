"""Graph reasoning: the GloRe unit and where it goes in an smp network.

A Global Reasoning unit (Chen et al., "Graph-Based Global Reasoning Networks", CVPR 2019)
lets every pixel of a feature map see every other in one step: pixels are pooled into a
few graph nodes with learnt weights, the nodes exchange information through a graph
convolution, and the result is broadcast back to the pixels with the same weights.

`add_glore` puts one unit on the deepest encoder feature (where global context is cheap:
usually 1/32 of the input's side) and, with ``decoder``, one after each decoder stage. The
encoder is left as smp built it, so its state-dict keys, its pretrained weights and smp's
own checks (output stride) are untouched: the deepest feature is transformed on its way
into the decoder, its only consumer here (segflow builds no classification head). Each
unit's last BatchNorm starts with a zero scale, so a new unit is exactly the identity and a
pretrained encoder is undisturbed until training moves that scale.

A unit is cubic in its input (the projection weights multiply the pixel states, and the
answer is broadcast with the same weights): in eval mode, a shift of the features away
from the BatchNorm statistics training left grows with each unit it passes. One unit (the
default) is mild; the decoder units chain six, so benchmark them before relying on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from segflow.errors import ConfigError

__all__ = ["GRAPH_KINDS", "GraphOptions", "GloRe", "add_glore", "describe"]

#: `model.graph` choices: none = the plain network; glore = GloRe units.
GRAPH_KINDS = ("none", "glore")


@dataclass(frozen=True)
class GraphOptions:
    """What `add_glore` attaches; stored in the checkpoint (`dataclasses.asdict`) so a
    loaded model is rebuilt with the same units."""

    #: One of GRAPH_KINDS.
    kind: str
    #: Graph nodes per unit (N).
    nodes: int
    #: Channels of a node's state (C'); a unit on a narrower feature uses that width.
    channels: int
    #: Also one unit after each decoder stage (Unet, MAnet, Linknet).
    decoder: bool = False

    @classmethod
    def from_params(cls, model: object) -> GraphOptions | None:
        """From params.yaml's ``model`` section (`segflow.config.ModelParams`, read by
        attribute: this package does not import the config); None for ``graph: none``."""
        if model.graph == "none":
            return None
        return cls(model.graph, model.graph_nodes, model.graph_channels, model.graph_decoder)


class GloRe(nn.Module):
    """One Global Reasoning unit; the output has the input's shape.

    forward(x): x (B, C, H, W), any H and W -> x + BN(extend(Y)) (B, C, H, W), where
    Y (B, C', H, W) is the graph's answer broadcast back to the pixels.
    """

    def __init__(self, channels: int, nodes: int, node_channels: int) -> None:
        super().__init__()
        if min(channels, nodes, node_channels) < 1:
            raise ConfigError(
                f"model.graph_nodes / graph_channels: a GloRe unit needs at least one node and "
                f"channel, got nodes {nodes}, node channels {node_channels} on {channels} channels"
            )
        self.reduce = nn.Conv2d(channels, node_channels, 1)  # phi: the state of each pixel
        self.project = nn.Conv2d(channels, nodes, 1)  # B: each pixel's weight for each node
        self.adjacency = nn.Conv1d(nodes, nodes, 1)  # A_g: nodes exchange information
        self.update = nn.Conv1d(node_channels, node_channels, 1)  # W_g: each node's new state
        self.extend = nn.Conv2d(node_channels, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.norm.weight)  # identity at initialisation (the bias is zero too)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.reduce(x).flatten(2)  # (B, C', HW)
        weights = self.project(x).flatten(2)  # (B, N, HW)
        # Weighted global pooling, averaged rather than summed over the HW pixels, so node
        # states do not grow with the input (training crops and inference tiles differ in
        # size). Each factor takes 1/sqrt(HW) before the product: a sum over a full-resolution
        # stage's pixels, divided afterwards, overflows float16 under mixed precision.
        scale = weights.shape[-1] ** -0.5
        nodes = torch.matmul(weights * scale, state.transpose(1, 2) * scale)  # (B, N, C')
        nodes = F.relu(nodes + self.adjacency(nodes))  # graph convolution over the nodes
        nodes = self.update(nodes.transpose(1, 2))  # (B, C', N)
        answer = torch.matmul(nodes, weights).unflatten(-1, x.shape[-2:])  # (B, C', H, W)
        return x + self.norm(self.extend(answer))


class _DeepestFeature(nn.Module):
    """An smp decoder whose input's deepest feature goes through a unit first."""

    def __init__(self, decoder: nn.Module, unit: GloRe) -> None:
        super().__init__()
        self.inner = decoder
        self.glore = unit

    def forward(self, features: list[torch.Tensor], *args: object) -> torch.Tensor:
        return self.inner([*features[:-1], self.glore(features[-1])], *args)


class _Stage(nn.Module):
    """A decoder stage followed by a unit on its output."""

    def __init__(self, block: nn.Module, unit: GloRe) -> None:
        super().__init__()
        self.block = block
        self.glore = unit

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.glore(self.block(*args, **kwargs))


def _stage_channels(model: nn.Module, blocks: nn.ModuleList) -> list[int]:
    """Output channels of each decoder stage, measured by one small forward pass (smp's
    decoder blocks do not all say their width); nothing in the model changes."""
    widths: dict[int, int] = {}

    def measure(index: int) -> object:
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            widths[index] = output.shape[1]  # returns None: the output is left as it is

        return hook

    hooks = [block.register_forward_hook(measure(i)) for i, block in enumerate(blocks)]
    side = 2 * int(getattr(model.encoder, "output_stride", 32))
    training = model.training
    try:
        model.eval()  # no BatchNorm statistics move
        with torch.no_grad():
            model(torch.zeros(1, 3, side, side))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return [widths[i] for i in range(len(blocks))]


def add_glore(model: nn.Module, options: GraphOptions, arch: str) -> None:
    """Attach GloRe units to `model` (an smp SegmentationModel, in place) as `options` says.

    Raises:
        ConfigError: an unknown kind, or ``decoder`` on an architecture without a chain of
            decoder stages (its message lists the ones that have one).
    """
    if options.kind not in GRAPH_KINDS:
        raise ConfigError(f"model.graph: unknown graph {options.kind!r}; choose from {list(GRAPH_KINDS)}")
    if options.kind == "none":
        return
    blocks = getattr(model.decoder, "blocks", None)
    if options.decoder:
        # Unet, MAnet and Linknet decode in a chain of blocks; the others fuse all scales at
        # once (FPN, DeepLab, ...) or in a dense grid (UnetPlusPlus): no stage to follow.
        if not isinstance(blocks, nn.ModuleList):
            raise ConfigError(
                f"model.graph_decoder: architecture {arch!r} has no chain of decoder stages to put "
                "GloRe units after; use arch Unet, MAnet or Linknet, or set graph_decoder: false"
            )
        for i, width in enumerate(_stage_channels(model, blocks)):
            blocks[i] = _Stage(blocks[i], GloRe(width, options.nodes, min(options.channels, width)))
    deepest = model.encoder.out_channels[-1]
    model.decoder = _DeepestFeature(model.decoder, GloRe(deepest, options.nodes, min(options.channels, deepest)))


def describe(options: GraphOptions | dict | None) -> str:
    """A phrase for people (model card, logs): which units the network has, and where."""
    if isinstance(options, dict):
        options = GraphOptions(**options)
    if options is None or options.kind == "none":
        return "no graph-reasoning units"
    where = "the deepest encoder feature" + (" and after each decoder stage" if options.decoder else "")
    return f"GloRe graph-reasoning units ({options.nodes} nodes, up to {options.channels} channels each) on {where}"
