"""Linear-chain conditional random field (Lafferty, McCallum & Pereira 2001, "Conditional Random
Fields: Probabilistic Models for Segmenting and Labeling Sequence Data") over per-position
emission scores, as used on top of neural taggers by Lample et al. (2016, "Neural Architectures
for Named Entity Recognition", section 2.2).

For emissions ``P`` (``(L, T)``, one row per position) and a tag sequence ``y`` the score is

    s(y) = start[y_1] + sum_{i=1..L} P[i, y_i] + sum_{i=2..L} A[y_{i-1}, y_i] + end[y_L]

and ``p(y | x) = exp(s(y)) / Z`` with ``Z = sum_y' exp(s(y'))``, computed by the forward
algorithm (Rabiner 1989, eq. 19-21, in log space). The most likely sequence is found by the
Viterbi algorithm (Viterbi 1967; Rabiner 1989, eq. 30-35).

Transition constraints: an optional ``allowed`` mask forbids transitions (e.g. ``O -> I-PER`` in
BIO tagging). Forbidden transitions get ``-inf`` in Viterbi decoding, so a decoded sequence never
contains one, and a large finite penalty in the likelihood, so a gold sequence that breaks the
constraints gives a large loss instead of ``inf``/``NaN`` gradients.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

#: score of a forbidden transition inside the likelihood (``exp(-1e4)`` is 0 in float32)
FORBIDDEN_SCORE = -1e4


def bio_allowed_transitions(tag_names: Sequence[str]) -> Tensor:
    """The transitions that keep a tag sequence valid BIO/IOB2.

    ``I-X`` may only follow ``B-X`` or ``I-X``; so ``O -> I-X``, ``B-X -> I-Y``, ``I-X -> I-Y``
    (``X != Y``) and ``start -> I-X`` are forbidden. Everything else (any tag -> ``O`` / ``B-X``,
    any tag -> end) is allowed.

    Args:
        tag_names: the ``T`` tags (``O``, ``B-TYPE``, ``I-TYPE``), in id order.

    Returns:
        ``(T + 2, T + 2)`` bool: ``allowed[i, j]`` says whether tag ``j`` may follow tag ``i``;
        index ``T`` is the start state (a row) and ``T + 1`` the end state (a column), the
        convention of AllenNLP's ``allowed_transitions``.
    """
    num_tags = len(tag_names)
    start, end = num_tags, num_tags + 1
    parsed: List[Tuple[str, Optional[str]]] = []
    for name in tag_names:
        if name == "O":
            parsed.append(("O", None))
        elif len(name) > 2 and name[:2] in ("B-", "I-"):
            parsed.append((name[0], name[2:]))
        else:
            raise ValueError(f"tag {name!r} is not a BIO tag (O, B-TYPE or I-TYPE)")
    allowed = torch.zeros(num_tags + 2, num_tags + 2, dtype=torch.bool)
    for j, (prefix_j, type_j) in enumerate(parsed):
        for i in list(range(num_tags)) + [start]:
            if prefix_j != "I":
                allowed[i, j] = True
            elif i != start:
                prefix_i, type_i = parsed[i]
                allowed[i, j] = prefix_i in ("B", "I") and type_i == type_j
    allowed[: num_tags, end] = True
    allowed[start, end] = True
    return allowed


class LinearChainCRF(nn.Module):
    """Linear-chain CRF with learned start, transition and end scores.

    Args:
        num_tags: number of tags ``T``.
        allowed: optional ``(T + 2, T + 2)`` bool mask of allowed transitions (start state at
            row ``T``, end state at column ``T + 1``; see :func:`bio_allowed_transitions`).
            It is a buffer, saved with the weights; :meth:`set_allowed` replaces it.

    Shapes: emissions ``(B, L, T)``, tags ``(B, L)`` long, mask ``(B, L)`` bool with ``True``
    for real positions; each row's real positions come first (right padding), ``L >= 1``. Rows
    with no real position are allowed (their NLL is 0 and their decoding is empty).
    """

    def __init__(self, num_tags: int, allowed: Optional[Tensor] = None) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"a CRF needs at least one tag, got num_tags={num_tags}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))  # [from, to]
        self.start_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.register_buffer("allowed", torch.ones(num_tags + 2, num_tags + 2, dtype=torch.bool))
        if allowed is not None:
            self.set_allowed(allowed)

    def set_allowed(self, allowed: Tensor) -> None:
        """Replace the transition constraints (``(T + 2, T + 2)`` bool)."""
        expected = (self.num_tags + 2, self.num_tags + 2)
        if tuple(allowed.shape) != expected:
            raise ValueError(f"allowed must have shape {expected} (tags + start + end), got {tuple(allowed.shape)}")
        allowed = allowed.to(device=self.allowed.device, dtype=torch.bool)
        if not allowed[self.num_tags, : self.num_tags].any() or not allowed[: self.num_tags, self.num_tags + 1].any():
            raise ValueError("allowed forbids every tag at the start or at the end: no tag sequence would be possible")
        self.allowed.copy_(allowed)

    def _potentials(self, forbidden: float) -> Tuple[Tensor, Tensor, Tensor]:
        """(transitions ``(T, T)``, start ``(T,)``, end ``(T,)``) with forbidden entries set to ``forbidden``."""
        t = self.num_tags
        allowed = self.allowed
        transitions = self.transitions.float().masked_fill(~allowed[:t, :t], forbidden)
        start = self.start_transitions.float().masked_fill(~allowed[t, :t], forbidden)
        end = self.end_transitions.float().masked_fill(~allowed[:t, t + 1], forbidden)
        return transitions, start, end

    def _check(self, emissions: Tensor, mask: Tensor) -> None:
        if emissions.dim() != 3 or emissions.size(-1) != self.num_tags:
            raise ValueError(f"emissions must be (B, L, {self.num_tags}), got {tuple(emissions.shape)}")
        if emissions.size(1) < 1:
            raise ValueError("emissions must have at least one position (L >= 1); pad empty rows and mask them out")
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"mask must be {tuple(emissions.shape[:2])}, got {tuple(mask.shape)}")

    def sequence_score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """``s(y)`` of the given tag sequences: ``(B,)``. Tag values under ``mask == False`` are ignored."""
        self._check(emissions, mask)
        transitions, start, end = self._potentials(FORBIDDEN_SCORE)
        emissions = emissions.float()
        maskf = mask.float()
        tags = tags.masked_fill(~mask, 0)
        emitted = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)  # (B, L)
        score = start[tags[:, 0]] + (emitted * maskf).sum(1)
        if tags.size(1) > 1:
            score = score + (transitions[tags[:, :-1], tags[:, 1:]] * maskf[:, 1:]).sum(1)
        lengths = mask.long().sum(1)
        last = tags.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        return score + end[last]

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """``log Z`` by the forward algorithm: ``(B,)``.

        ``alpha_1(j) = start[j] + P[1, j]``;
        ``alpha_i(j) = logsumexp_k(alpha_{i-1}(k) + A[k, j]) + P[i, j]``;
        ``log Z = logsumexp_j(alpha_L(j) + end[j])``.
        """
        self._check(emissions, mask)
        transitions, start, end = self._potentials(FORBIDDEN_SCORE)
        emissions = emissions.float()
        alpha = start + emissions[:, 0]  # (B, T)
        for i in range(1, emissions.size(1)):
            step = torch.logsumexp(alpha.unsqueeze(2) + transitions.unsqueeze(0), dim=1) + emissions[:, i]
            alpha = torch.where(mask[:, i].unsqueeze(1), step, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def nll(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Negative log-likelihood ``log Z - s(y)`` of each sequence: ``(B,)`` (0 for empty rows).

        Args:
            emissions: ``(B, L, T)`` scores (e.g. a tagger's logits).
            tags: ``(B, L)`` gold tag ids (any value, e.g. -100, where ``mask`` is False).
            mask: ``(B, L)`` bool, True for real positions (right padding).
        """
        nll = self.log_partition(emissions, mask) - self.sequence_score(emissions, tags, mask)
        return nll.masked_fill(~mask[:, 0], 0.0)

    @torch.no_grad()
    def viterbi_decode(self, emissions: Tensor, mask: Tensor) -> List[List[int]]:
        """The highest-scoring tag sequence of each row (forbidden transitions score ``-inf``).

        ``delta_i(j) = max_k(delta_{i-1}(k) + A[k, j]) + P[i, j]`` with back-pointers
        ``psi_i(j) = argmax_k(...)``; padded positions copy the state forward unchanged.

        Returns:
            ``B`` lists of tag ids, each as long as its row's real positions.
        """
        self._check(emissions, mask)
        batch, length, num_tags = emissions.shape
        lengths = mask.long().sum(1).tolist()
        transitions, start, end = self._potentials(float("-inf"))
        emissions = emissions.float()
        identity = torch.arange(num_tags, device=emissions.device).unsqueeze(0).expand(batch, -1)
        score = start + emissions[:, 0]  # (B, T)
        history = []
        for i in range(1, length):
            best, pointer = (score.unsqueeze(2) + transitions.unsqueeze(0)).max(dim=1)  # over the previous tag
            real = mask[:, i].unsqueeze(1)
            score = torch.where(real, best + emissions[:, i], score)
            history.append(torch.where(real, pointer, identity))
        last = (score + end).argmax(dim=1)  # (B,)
        path = [last]
        for pointer in reversed(history):
            last = pointer.gather(1, last.unsqueeze(1)).squeeze(1)
            path.append(last)
        path.reverse()
        tags = torch.stack(path, dim=1).tolist()
        return [row[:n] for row, n in zip(tags, lengths)]
