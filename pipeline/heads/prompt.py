"""Prompt-classifier heads (ActionCLIP / X-CLIP / Animal-CLIP family) on cached features.

``zero_shot``: video = mean of normalised frame embeddings, class = mean of its normalised text
bank rows, score = cosine. ``prompt`` (trained) adds, each starting as a no-op so that at step 0
it *is* ``zero_shot``: a temporal transformer on the frames (zero-initialised output), a class
prototype refiner shared by all classes (so it applies to classes never trained on),
video-conditioned prompts (class tokens cross-attend to frame, motion and species tokens), a
species token from a *predicted* species distribution with a relation prior
``gamma * log(p_species @ R)``, a learnable scale and, for multi-label sets, a shared bias.

Classes are data, not weights: :meth:`PromptHead.set_classes` swaps in the prototypes of other
classes (open vocabulary, base-to-novel) without retraining.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .graph import RELATION_FORMAT, UNKNOWN, GraphRefiner, ambiguous_ones, relation_graph, relation_prior
from .layers import attention, encoder_layer, masked_mean
from .text_bank import encode_classes

CLIP_SCALE = 100.0  # CLIP's trained logit scale


def video_embedding(frames, mask) -> torch.Tensor:
    """The zero-shot video: the normalised mean of the normalised frame embeddings."""
    return F.normalize(masked_mean(F.normalize(frames, dim=-1), mask), dim=-1)


def _zero(linear: nn.Linear) -> nn.Linear:
    nn.init.zeros_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return linear


class ZeroShotHead(nn.Module):
    """CLIP's zero-shot classifier: nothing is trained. Logits are ``scale * cos + bias`` in
    float64, ``scale`` being the CLIP model's own logit scale (100 for OpenAI's weights).
    Single-label sets: a softmax over classes. Multi-label sets: ``bias`` is fitted on the
    training split (:func:`fit_bias`) so that sigmoid scores match the label rate instead of
    saturating (a sigmoid of 100 * cos is 1.0 for every cosine above about 0.17, and real CLIP
    cosines lie in 0.2-0.35). Either way the ranking is that of the cosines. With a species
    bank the head also scores species (``aux["species_logits"]``)."""
    takes_species = False

    def __init__(self, rgb_dim: int, n_classes: int, n_species: int = 0, scale: float = CLIP_SCALE):
        super().__init__()
        self.register_buffer("protos", torch.zeros(n_classes, rgb_dim))
        self.register_buffer("species_protos", torch.zeros(n_species, rgb_dim))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float64))
        self.register_buffer("bias", torch.tensor(0.0, dtype=torch.float64))
        self.aux = {}

    def set_classes(self, protos, relation=None, names=None):
        self.protos = torch.as_tensor(protos, dtype=torch.float32, device=self.protos.device)

    def set_species(self, protos, relation=None):
        self.species_protos = torch.as_tensor(protos, dtype=torch.float32, device=self.protos.device)

    def set_stats(self, *_):
        pass  # CLIP's space is used as it is

    def forward(self, rgb, motion, mask, species=None):
        video = video_embedding(rgb.double(), mask)
        if len(self.species_protos):
            self.aux = {"species_logits": self.scale * video @ F.normalize(
                self.species_protos.double(), dim=-1).T}
        return self.scale * (video @ F.normalize(self.protos.double(), dim=-1).T) + self.bias


def fit_bias(logits, targets) -> float:
    """The shared bias ``b`` that makes ``sigmoid(logits + b)`` a calibrated probability:
    logistic regression with the slope held at 1, over all (video, class) pairs, in float64."""
    x = torch.as_tensor(logits, dtype=torch.float64).flatten()
    y = torch.as_tensor(targets, dtype=torch.float64).flatten()
    rate = float(y.mean().clamp(1e-4, 1 - 1e-4))
    b = torch.tensor(math.log(rate / (1 - rate)) - float(x.mean()), dtype=torch.float64,
                     requires_grad=True)
    opt = torch.optim.LBFGS([b], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x + b, y)
        loss.backward()
        return loss
    opt.step(closure)
    return b.item()


class CoopText(nn.Module):
    """CoOp: shared learnable context vectors before the class-name tokens, through the frozen
    CLIP text tower. The tower is held outside the module tree, so it is neither trained nor
    saved; only ``ctx`` is."""

    def __init__(self, clip_model, tokenizer, class_names: list[str], n_ctx: int = 4,
                 init: str = "a video of an animal"):
        super().__init__()
        object.__setattr__(self, "clip", clip_model)
        self.tokenizer, self.n_ctx = tokenizer, n_ctx
        with torch.no_grad():
            init_ids = tokenizer([init])[0]
            n_init = int((init_ids > 0).sum()) - 2
            ctx = clip_model.token_embedding(init_ids[1:1 + n_init].to(
                clip_model.token_embedding.weight.device)).float()
            if n_init >= n_ctx:
                ctx = ctx[:n_ctx]
            else:
                ctx = torch.cat([ctx, 0.02 * torch.randn(n_ctx - n_init, ctx.shape[1], device=ctx.device)])
        self.ctx = nn.Parameter(ctx.clone())
        self.set_names(class_names)

    def set_names(self, class_names: list[str]):
        placeholder = " ".join(["X"] * self.n_ctx)
        tokens = self.tokenizer([f"{placeholder} {n.replace('_', ' ')}." for n in class_names])
        self.register_buffer("tokens", tokens.to(self.ctx.device), persistent=False)

    def forward(self) -> torch.Tensor:
        m = self.clip
        if m.token_embedding.weight.device != self.ctx.device:
            m.to(self.ctx.device)
        x = m.token_embedding(self.tokens).float()
        x = torch.cat([x[:, :1], self.ctx[None].expand(len(x), -1, -1).to(x.dtype),
                       x[:, 1 + self.n_ctx:]], 1)
        x = x + m.positional_embedding.float()
        x = m.transformer(x, attn_mask=m.attn_mask)
        x = m.ln_final(x)
        x = x[torch.arange(len(x), device=x.device), self.tokens.argmax(-1)]
        x = m.text_projection(x) if isinstance(m.text_projection, nn.Linear) else x @ m.text_projection
        return F.normalize(x.float(), dim=-1)


def _upgrade_saved_relation(state, prefix, *args):
    """A head saved before its relation's format was recorded wrote "nothing known" as ones, as
    it wrote a species that does every action: a row or column of ones cannot be read back, so
    such a head is refused (:func:`pipeline.heads.run.load_head` upgrades it from its run's
    relation.tsv first). A head that records the format loads as saved."""
    key, fmt = prefix + "relation", prefix + "relation_format"
    if fmt not in state:
        if key in state and ambiguous_ones(state[key]):
            raise ValueError("a prompt head saved before its relation's format was recorded: a "
                             "row or column of ones is 'nothing known' or 'every action', which "
                             "cannot be told apart; load it with load_head from its run folder "
                             "(relation.tsv beside heads/), or train it again")
        state[fmt] = torch.tensor(RELATION_FORMAT)


class PromptHead(nn.Module):
    """See the module docstring. ``species``: ``none``, ``zero_shot`` (against the species bank)
    or ``classifier`` (zero-shot plus a trained correction, supervised by the annotation's
    species). ``oracle`` (set only for the labelled ablation) replaces the prediction by the
    ground-truth species passed to :meth:`forward`."""
    takes_species = True

    def __init__(self, rgb_dim, motion_dim, n_classes, n_species=0, layers=1, attention_heads=8,
                 dropout=0.1, max_frames=64, use_motion=False, refine="mlp", conditioning=True,
                 species="classifier", relation_prior=True, multilabel=True, coop=None,
                 video_species=False, learn_scale=True):
        super().__init__()
        d = rgb_dim
        if d % attention_heads:
            raise ValueError(f"prompt head: attention_heads={attention_heads} must divide the "
                             f"embedding width {d}")
        self.multilabel, self.oracle = multilabel, False
        self.register_buffer("protos", torch.zeros(n_classes, d))
        self.pos = nn.Parameter(0.01 * torch.randn(max_frames, d))
        layer = nn.TransformerEncoderLayer(d, attention_heads, 4 * d, dropout, batch_first=True, norm_first=True)
        self.temporal = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out_proj = _zero(nn.Linear(d, d))
        self.motion_in = nn.Linear(motion_dim, d) if use_motion and motion_dim else None
        self.type_embed = nn.Parameter(torch.zeros(2, d))
        self.register_buffer("motion_mean", torch.zeros(max(motion_dim, 1)))
        self.register_buffer("motion_std", torch.ones(max(motion_dim, 1)))
        self._init_refine(refine, d, attention_heads, dropout)
        # video-conditioned prompts (X-CLIP)
        self.cond = None
        # class tokens attend to the frame (and motion) tokens and the species token, or
        # ("species") to the species token only, as Animal-CLIP's prompt generator does
        self.cond_memory = "species" if conditioning == "species" else "frames"
        if conditioning:
            self.cond_norm = nn.LayerNorm(d)
            self.cond = nn.MultiheadAttention(d, attention_heads, dropout=dropout, batch_first=True)
            _zero(self.cond.out_proj)
            self.cond_scale = nn.Parameter(torch.full((d,), 0.1))
        # species
        self.species_mode = species if n_species else "none"
        self.register_buffer("species_protos", torch.zeros(max(n_species, 1), d))
        self.register_buffer("relation", torch.full((max(n_species, 1), n_classes), UNKNOWN))
        self.register_buffer("relation_format", torch.tensor(RELATION_FORMAT))
        self._register_load_state_dict_pre_hook(_upgrade_saved_relation)
        self.use_prior = relation_prior and self.species_mode != "none"
        # species-conditioned video (Animal-CLIP conditions both sides on the predicted species)
        self.video_cond = None
        if video_species and self.species_mode != "none":
            self.video_cond_norm = nn.LayerNorm(d)
            self.video_cond = nn.MultiheadAttention(d, attention_heads, dropout=dropout, batch_first=True)
            _zero(self.video_cond.out_proj)
        if self.species_mode == "classifier":
            self.species_delta = _zero(nn.Linear(d, n_species))
        self.gamma = nn.Parameter(torch.zeros(()))
        # CLIP's scale, learnt, or kept as CLIP's (Animal-CLIP trains with its text side frozen)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(CLIP_SCALE)), requires_grad=learn_scale)
        self.bias = nn.Parameter(torch.zeros(()))
        self.coop = coop
        self.aux = {}

    def _init_refine(self, refine, d, attention_heads, dropout):
        """Prototype refinement, one module for all classes."""
        self.refine_kind = refine
        if refine == "gcn":
            self.refine = GraphRefiner(d)
        elif refine == "attention":
            self.refine_norm = nn.LayerNorm(d)
            self.refine = nn.MultiheadAttention(d, attention_heads, dropout=dropout, batch_first=True)
            _zero(self.refine.out_proj)
        else:
            self.refine = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), _zero(nn.Linear(d, d)))
        self.refine_scale = nn.Parameter(torch.full((d,), 0.1))

    # -- classes -----------------------------------------------------------------------------
    def set_classes(self, protos, relation=None, names=None):
        """Score these classes from now on: ``protos`` (C, D) from :func:`prototypes`;
        ``relation`` (S, C) or None (neutral); ``names`` for the learnable text mode."""
        dev = self.protos.device
        self.protos = torch.as_tensor(protos, dtype=torch.float32, device=dev)
        c = self.protos.shape[0]
        self.relation = (torch.as_tensor(relation, dtype=torch.float32, device=dev) if relation is not None
                         else torch.full((self.relation.shape[0], c), UNKNOWN, device=dev))
        if self.coop is not None and names is not None:
            self.coop.set_names(names)

    def set_species(self, protos, relation):
        self.species_protos = torch.as_tensor(protos, dtype=torch.float32, device=self.protos.device)
        self.relation = torch.as_tensor(relation, dtype=torch.float32, device=self.protos.device)

    def set_stats(self, name, mean, std):
        if name == "motion":
            self.motion_mean.copy_(torch.as_tensor(mean))
            self.motion_std.copy_(torch.as_tensor(std).clamp(min=1e-6))

    def class_embeddings(self, p_species=None, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(base prototypes (C, D), refined prototypes: (C, D), or (B, C, D) for the graph,
        which depends on each video's species distribution ``p_species`` (B, S))."""
        base = self.coop() if self.coop is not None else self.protos
        if self.refine_kind == "gcn":
            species = self.species_protos if self.species_mode != "none" else None
            return base, self.refine(base, species, p_species, relation_graph(self.relation), batch)
        if self.refine_kind == "attention":
            q = self.refine_norm(base)[None]
            delta = self.refine(q, q, q, need_weights=False)[0][0]
        else:
            delta = self.refine(base)
        return base, base + self.refine_scale * delta

    # -- video -------------------------------------------------------------------------------
    def species_distribution(self, video, species=None):
        if self.species_mode == "none":
            return None, None
        logits = CLIP_SCALE * video @ self.species_protos.T
        if self.species_mode == "classifier":
            logits = logits + self.species_delta(video)
        p = torch.softmax(logits.float(), -1)
        if self.oracle and species is not None:  # multi-hot, weight 1 per species (Animal-CLIP's)
            known = species.sum(-1, keepdim=True) > 0
            p = torch.where(known, species.float(), p)
        return p, logits

    def positions(self, mask) -> torch.Tensor:
        """Position embeddings of the rows, (B or 1, T, D). A video with more rows than
        ``max_frames`` spreads the table over its own rows (linear interpolation), so its
        positions do not depend on the batch it is padded in; shorter videos index it."""
        t, n = mask.shape[1], len(self.pos)
        if t <= n:
            return self.pos[:t][None]
        lengths = mask.sum(1, keepdim=True).float()
        j = torch.arange(t, device=mask.device, dtype=torch.float32)[None]
        x = torch.where(lengths > n, j * (n - 1) / (lengths - 1), j).clamp(max=n - 1)
        lo = x.floor().long()
        hi = (lo + 1).clamp(max=n - 1)
        w = (x - lo)[..., None]
        return self.pos[lo] * (1 - w) + self.pos[hi] * w

    def forward(self, rgb, motion, mask, species=None):
        b, t, _ = rgb.shape
        frames = F.normalize(rgb.float(), dim=-1)
        zs = video_embedding(rgb.float(), mask)
        pos = self.positions(mask)
        tokens, tok_mask = frames + pos, mask
        if self.motion_in is not None:
            m = self.motion_in((motion.float() - self.motion_mean) / self.motion_std) + pos
            tokens = torch.cat([tokens + self.type_embed[0], m + self.type_embed[1]], 1)
            tok_mask = torch.cat([mask, mask], 1)
        h = tokens
        for layer in self.temporal.layers:
            h = encoder_layer(layer, h, ~tok_mask)
        video = zs + self.out_proj(masked_mean(h, tok_mask))
        p_species, species_logits = self.species_distribution(zs, species)
        token = None if p_species is None else F.normalize(p_species @ self.species_protos, dim=-1)[:, None]
        if self.video_cond is not None:
            q = self.video_cond_norm(video)[:, None]
            video = video + self.video_cond(q, token, token, need_weights=False)[0][:, 0]
        video = F.normalize(video, dim=-1)

        base, refined = self.class_embeddings(p_species, b)
        cls = refined if refined.dim() == 3 else refined[None].expand(b, -1, -1)
        if self.cond is not None and (token is not None or self.cond_memory == "frames"):
            memory, mem_mask = h, tok_mask
            if self.cond_memory == "species":
                memory, mem_mask = token.to(h.dtype), torch.ones(b, 1, dtype=torch.bool, device=mask.device)
            elif token is not None:
                memory = torch.cat([memory, token.to(memory.dtype)], 1)
                mem_mask = torch.cat([mem_mask, torch.ones(b, 1, dtype=torch.bool, device=mask.device)], 1)
            q = self.cond_norm(cls)
            cls = cls + self.cond_scale * attention(self.cond, q, memory, ~mem_mask)
        cos = (F.normalize(cls.float(), dim=-1) * video[:, None]).sum(-1)
        logits = self.logit_scale.exp() * cos + (self.bias if self.multilabel else 0.0)
        if self.use_prior and p_species is not None:
            logits = logits + self.gamma * torch.log((p_species @ relation_prior(self.relation)).clamp(min=1e-4))
        # the graph's LayerNorm output has no unit scale: its anchor compares directions
        moved = F.normalize(refined, dim=-1) if self.refine_kind == "gcn" else refined
        self.aux = {"species_logits": species_logits, "anchor": ((moved - base) ** 2).sum(-1).mean()}
        return logits

    def aux_loss(self, logits, targets, species, params) -> torch.Tensor:
        """Multi-positive softmax (multi-label sets), species and anchor terms."""
        loss = logits.new_zeros(())
        if self.multilabel and params["softmax_weight"]:
            t = targets.float()
            pos = t.sum(-1)
            ce = -(t * torch.log_softmax(logits.float(), -1)).sum(-1) / pos.clamp(min=1)
            loss = loss + params["softmax_weight"] * ce[pos > 0].mean() if (pos > 0).any() else loss
        sl = self.aux.get("species_logits")
        if sl is not None and species is not None and self.species_mode == "classifier" \
                and params["species_weight"]:
            known = species.sum(-1) > 0
            if known.any():
                target = species[known] / species[known].sum(-1, keepdim=True)
                loss = loss + params["species_weight"] * -(target * torch.log_softmax(
                    sl[known].float(), -1)).sum(-1).mean()
        return loss + params["anchor_weight"] * self.aux["anchor"]


def add_classes(model, known: list[str], names: list[str], attrs: dict, device="cpu") -> list[str]:
    """Let a trained prompt head also score ``names`` (those not in ``known``), without
    retraining; nothing is known of their species, so their prior is neutral. Returns all names."""
    new = [n for n in names if n.lower() not in {k.lower() for k in known}]
    if not new:
        return list(known)
    protos = torch.cat([model.protos.cpu(), encode_classes(new, attrs, device).cpu()])
    relation = getattr(model, "relation", None)
    if relation is not None:
        relation = torch.cat([relation.cpu(), torch.full((len(relation), len(new)), UNKNOWN)], 1)
    model.set_classes(protos, relation, list(known) + new)
    return list(known) + new


def build_zero_shot(rgb_dim, motion_dim, n_classes, params, text: dict | None,
                    multilabel: bool = True):
    """CLIP's zero-shot classifier; ``text`` as for :func:`build_prompt`."""
    scale = ((text or {}).get("attrs") or {}).get("logit_scale") or CLIP_SCALE
    head = ZeroShotHead(rgb_dim, n_classes, scale=scale)
    if text is not None and text.get("species_protos") is not None:
        head.set_species(text["species_protos"])
    return _with_classes(head, text)


def build_prompt(rgb_dim, motion_dim, n_classes, params, text: dict | None, multilabel: bool = True):
    """The prompt head. ``text`` as :func:`load_text` gives it (``protos`` (C, D),
    ``species_protos`` (S, D) or None, ``relation`` (S, C) or None, ``class_names``, ``clip``
    for the learnable mode)."""
    n_species = 0 if text is None or text.get("species_protos") is None else len(text["species_protos"])
    coop = None
    if params.get("text_mode") == "learnable":
        if text is None or text.get("clip") is None:
            raise ValueError("prompt head: text_mode learnable needs the CLIP model of the text bank")
        model, tokenizer = text["clip"]
        coop = CoopText(model, tokenizer, text["class_names"], params.get("n_ctx", 4))
    kwargs = {k: v for k, v in params.items() if k not in ("motion", "text_mode", "n_ctx")}
    head = PromptHead(rgb_dim, motion_dim, n_classes, n_species, coop=coop, multilabel=multilabel,
                      use_motion=params.get("motion", False), **kwargs)
    if n_species:
        relation = text.get("relation")
        head.set_species(text["species_protos"],
                         torch.full((n_species, n_classes), UNKNOWN) if relation is None else relation)
    return _with_classes(head, text)


def _with_classes(head, text: dict | None):
    if text is not None and text.get("protos") is not None:
        head.set_classes(text["protos"], getattr(head, "relation", None), text.get("class_names"))
    return head
