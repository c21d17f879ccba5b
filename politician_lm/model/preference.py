"""The preference objectives as plain tensor functions (no Lightning): per-sequence completion log-probabilities,
the sigmoid DPO loss with an optional SFT term on the chosen answers (RPO), and reference-free SimPO.

DPO (Rafailov et al., 2023) on a pair (prompt x, chosen y_w, rejected y_l), with the policy pi and the reference
pi_ref (the policy at the start of the stage):

    h = beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))]
    loss_dpo = -log sigmoid(h), averaged over pairs

where log pi(y|x) sums the log-probabilities of the answer's tokens (those with a label, EOS included). The implicit
rewards are beta * (log pi - log pi_ref); "reward accuracy" is the share of pairs whose chosen reward is higher.
With ``sft_weight`` > 0 the loss adds that weight times the mean per-token NLL of the chosen answers (RPO,
Pang et al., 2024), which keeps the chosen answers likely while the margin grows.

SimPO (Meng et al., 2024) has no reference: the reward is the length-normalised log-probability,

    r(y) = beta * log pi(y|x) / |y|,    loss_simpo = -log sigmoid(r(y_w) - r(y_l) - gamma)

DPO's rewards are measured from the reference, so a lean the reference shares across all pairs (an instruct model's
"Yes" to every "Do you support ...?") is invisible to it; SimPO's are absolute, so pairs the policy gets wrong weigh
more until the lean is gone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from politician_lm.batch import SEGMENT_PAD, SEGMENT_PROMPT
from politician_lm.model.head_loss import logits_nll


@dataclass
class PreferenceOutput:
    """The loss and what gets logged; every field is a 0-d tensor except the per-pair rewards."""

    loss: torch.Tensor
    dpo_loss: torch.Tensor
    sft_loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor

    def metrics(self) -> dict[str, torch.Tensor]:
        margin = self.chosen_rewards - self.rejected_rewards
        return {
            "reward_accuracy": (margin > 0).float().mean(),
            "reward_margin": margin.mean(),
            "logps_chosen": self.chosen_logps.mean(),
            "logps_rejected": self.rejected_logps.mean(),
            "dpo_loss": self.dpo_loss,
            "sft_loss": self.sft_loss,
        }


def sequence_logps(
    logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, n_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(summed log-probability, token count)`` per row, from the logits of the labelled positions only.

    ``logits`` [tokens, vocab] and ``targets`` [tokens] are the positions that have a label, ``rows`` [tokens] the
    row each one belongs to. Computed in float32 at least (float64 stays float64).
    """
    return row_sums(-logits_nll(logits, targets), rows, n_rows)


def row_sums(token_logps: torch.Tensor, rows: torch.Tensor, n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(summed value, token count)`` per row of per-token values ``token_logps`` [tokens], ``rows`` naming each
    token's row."""
    sums = torch.zeros(n_rows, dtype=token_logps.dtype, device=token_logps.device).index_add(0, rows, token_logps)
    counts = torch.zeros(n_rows, dtype=torch.long, device=rows.device).index_add(0, rows, torch.ones_like(rows))
    return sums, counts


def pair_attention_mask(segments: torch.Tensor, float_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The [rows, 1, L, L] attention mask of pair rows (``politician_lm.batch``): causal, and a token of one answer
    never sees the other answer; a padding position sees only itself (so no softmax row is empty).

    Boolean (True = attend) for SDPA; with ``float_dtype``, additive (0 or the dtype's minimum) for eager attention.
    """
    length = segments.shape[1]
    pos = torch.arange(length, device=segments.device)
    causal = pos[None, :] <= pos[:, None]  # [query, key]
    query, key = segments[:, :, None], segments[:, None, :]
    allowed = causal & ((key == SEGMENT_PROMPT) | (key == query)) & (query != SEGMENT_PAD)
    allowed = allowed | (torch.eye(length, dtype=torch.bool, device=segments.device) & (query == SEGMENT_PAD))
    allowed = allowed[:, None]
    if float_dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=float_dtype, device=segments.device).masked_fill(
        ~allowed, torch.finfo(float_dtype).min
    )


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_tokens: torch.Tensor,
    beta: float,
    sft_weight: float = 0.0,
) -> PreferenceOutput:
    """Sigmoid DPO over a batch of pairs, plus ``sft_weight`` x the chosen answers' mean per-token NLL."""
    ref_chosen = ref_chosen_logps.to(chosen_logps.dtype)
    ref_rejected = ref_rejected_logps.to(chosen_logps.dtype)
    chosen_rewards = beta * (chosen_logps - ref_chosen)
    rejected_rewards = beta * (rejected_logps - ref_rejected)
    return _with_sft(0.0, chosen_rewards, rejected_rewards, chosen_logps, rejected_logps, chosen_tokens, sft_weight)


def _with_sft(
    margin: float,
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_tokens: torch.Tensor,
    sft_weight: float,
) -> PreferenceOutput:
    """-log sigmoid(chosen - rejected reward - ``margin``) averaged over pairs, plus ``sft_weight`` x the chosen
    answers' mean per-token NLL: the loss of DPO (margin 0, rewards from the reference) and of SimPO."""
    preference = -F.logsigmoid(chosen_rewards - rejected_rewards - margin).mean()
    sft = -chosen_logps.sum() / chosen_tokens.sum().clamp(min=1)
    return PreferenceOutput(
        loss=preference + sft_weight * sft if sft_weight else preference,
        dpo_loss=preference.detach(),
        sft_loss=sft.detach(),
        chosen_rewards=chosen_rewards.detach(),
        rejected_rewards=rejected_rewards.detach(),
        chosen_logps=chosen_logps.detach(),
        rejected_logps=rejected_logps.detach(),
    )


def simpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    beta: float,
    gamma: float,
    sft_weight: float = 0.0,
) -> PreferenceOutput:
    """SimPO over a batch of pairs (rewards: ``beta`` x the mean per-token log-probability; target margin ``gamma``),
    plus ``sft_weight`` x the chosen answers' mean per-token NLL, as ``dpo_loss`` adds it."""
    chosen_rewards = beta * chosen_logps / chosen_tokens.clamp(min=1).to(chosen_logps.dtype)
    rejected_rewards = beta * rejected_logps / rejected_tokens.clamp(min=1).to(rejected_logps.dtype)
    return _with_sft(gamma, chosen_rewards, rejected_rewards, chosen_logps, rejected_logps, chosen_tokens, sft_weight)
