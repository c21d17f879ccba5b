"""Next-token NLL through the output head a chunk of positions at a time, each position's gradient taken in the
same pass: no [tokens, vocab] tensor is ever kept.

Cross-entropy after the head keeps the logits of every labelled position for backward (1,503 positions of
SmolLM2's 49,152-word vocabulary: 282 MB of fp32), its log-softmax beside them, and backward allocates two more
of the same size. But a position's NLL depends on its own hidden state only, so its gradient is
``(softmax - onehot(target)) @ W``: one row as wide as the hidden state. ``head_nll`` computes the logits of
``CHUNK`` floats' worth of positions, their NLL and (when a gradient will be needed) those rows, and drops the
logits before the next chunk; backward scales the rows by the incoming gradient. The arithmetic is the plain path's:
the same forward GEMM and the same backward GEMM, the softmax computed once instead of twice.

Only for a frozen head (LoRA leaves it so), or with no gradient wanted: ``token_nll`` takes the plain path otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

CHUNK = 1 << 24  # logits per chunk (64 MB of fp32; 341 of SmolLM2's positions): smaller chunks made the head slower


def fusable(head: Any) -> bool:
    """True where ``head`` is a plain linear layer whose weight (and bias) take no gradient here."""
    return type(head) is torch.nn.Linear and (
        not torch.is_grad_enabled() or not any(p.requires_grad for p in head.parameters())
    )


class _HeadNLL(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor) -> torch.Tensor:
        weight, bias = head.weight, head.bias
        want_grad = ctx.needs_input_grad[0]
        out_dtype = torch.promote_types(hidden.dtype, torch.float32)
        nll = hidden.new_empty(hidden.shape[0], dtype=out_dtype)
        grad = torch.empty_like(hidden) if want_grad else None
        step = max(1, CHUNK // weight.shape[0])
        for start in range(0, hidden.shape[0], step):
            end = min(start + step, hidden.shape[0])
            logits = F.linear(hidden[start:end], weight, bias).to(out_dtype)  # as the plain path's .float()
            target = targets[start:end, None]
            logprobs = logits.log_softmax(dim=-1)
            del logits
            nll[start:end] = -logprobs.gather(1, target).squeeze(1)
            if want_grad:
                probs = logprobs.exp_()  # softmax, in place
                probs.scatter_add_(1, target, probs.new_full(target.shape, -1.0))
                grad[start:end] = probs.to(weight.dtype) @ weight
        ctx.save_for_backward(grad)
        return nll

    @staticmethod
    def backward(ctx: Any, grad_nll: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (grad,) = ctx.saved_tensors
        if grad is None:
            return None, None, None
        return grad * grad_nll[:, None].to(grad.dtype), None, None


def head_nll(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor) -> torch.Tensor:
    """``-log softmax(head(hidden))[target]`` per position, ``[tokens]``, in float32 or finer (float64 stays float64):
    what ``F.cross_entropy(head(hidden).float(), targets, reduction="none")`` gives, differentiable in ``hidden``."""
    return _HeadNLL.apply(hidden, head, targets)


def token_nll(hidden: torch.Tensor, head: Any, targets: torch.Tensor) -> torch.Tensor:
    """Each position's NLL of its target through ``head``, float32 or finer: ``head_nll`` where the head is
    ``fusable``, else the head's logits and cross-entropy (a trainable or non-linear head). Without gradients
    (scoring with a head of another linear type, as inference's packed one) the logits are made ``CHUNK`` floats'
    worth of positions at a time, so that thousands of positions never hold a [positions, vocab] tensor at once."""
    if fusable(head):
        return head_nll(hidden, head, targets)
    width = getattr(head, "out_features", None)
    if torch.is_grad_enabled() or not isinstance(width, int) or len(hidden) * width <= CHUNK:
        return logits_nll(head(hidden), targets)
    step = max(1, CHUNK // width)
    return torch.cat(
        [logits_nll(head(hidden[i : i + step]), targets[i : i + step]) for i in range(0, len(hidden), step)]
    )


def logits_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each position's NLL of its target from its logits ``[tokens, vocab]``, in float32 or finer."""
    return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), targets, reduction="none")
