"""Animal-CLIP's text graph (``refine: gcn``): class and species text features refined by a
two-layer graph convolution over the species-action relation.

Nodes are the species text features, each scaled by the video's predicted probability of that
species, followed by the class text features; an edge joins a species to every action it is
annotated with, and every node to itself. Each layer is ``LayerNorm(A @ x W)`` with the
unnormalised adjacency ``A`` (LeakyReLU(0.1) after the first, which narrows to ``hidden``), and
the class nodes' output replaces the class text features, one set per video.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


UNKNOWN = -1.0  # a relation entry about which nothing is known (no edge, a neutral prior)
RELATION_FORMAT = 2  # saved in each head: 2 writes "nothing known" as UNKNOWN, never as ones


def relation_graph(relation: torch.Tensor) -> torch.Tensor:
    """(S + C, S + C) adjacency of a (S, C) relation matrix (1 a known pair, 0 a known
    non-pair, :data:`UNKNOWN`), species first, self-loops on. A species that does every
    action (MammalNet's panthera) keeps all its edges; one nothing is known of has none."""
    s, c = relation.shape
    known = relation > 0
    a = torch.eye(s + c, device=relation.device)
    a[:s, s:] = known.float()
    a[s:, :s] = known.float().T
    return a


def relation_prior(relation: torch.Tensor) -> torch.Tensor:
    """The relation as the species prior reads it: what is unknown is neutral (1, as a pair)."""
    return torch.where(relation == UNKNOWN, torch.ones_like(relation), relation)


def ambiguous_ones(relation: torch.Tensor) -> bool:
    """Whether a relation saved before :data:`UNKNOWN` existed cannot be read back: it wrote
    "nothing known" as a species row or a class column of ones, as it wrote a species that
    does every action."""
    ones = relation > 0
    return not (relation == UNKNOWN).any() and bool(ones.all(1).any() or ones.all(0).any())


class GraphRefiner(nn.Module):
    def __init__(self, dim: int, hidden: int = 256):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(dim, hidden) / dim ** 0.5)
        self.w2 = nn.Parameter(torch.randn(hidden, dim) / hidden ** 0.5)
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(dim)

    def forward(self, classes: torch.Tensor, species: torch.Tensor | None, p_species: torch.Tensor | None,
                adjacency: torch.Tensor, batch: int) -> torch.Tensor:
        """(C, D) class and (S, D) species text features, (B, S) species probabilities ->
        (B, C, D) refined class features. Without species the graph is the classes alone."""
        cls = classes[None].expand(batch, -1, -1)
        if species is None or p_species is None:
            nodes, a = cls, torch.eye(len(classes), device=classes.device)
        else:
            nodes = torch.cat([p_species[..., None].to(species.dtype) * species[None], cls], 1)
            a = adjacency
        h = self.norm1(F.leaky_relu(a @ (nodes @ self.w1), 0.1))
        h = self.norm2(a @ (h @ self.w2))
        return h[:, -len(classes):]
