"""RRM, the representation regularisation of the student (docs/method.md, "RRM"; arXiv 2505.12861 v1,
the RRM section; the equations follow the authors' released code, since the paper's are not
available), with its value and student gradient in closed form.

Shapes, pairing, teacher detachment and the (1/B) sum over samples, stages and present student
modalities follow the conventions of ``robustseg_core.losses.distillation``.

What the released code computes, per item (sample, stage, present student modality)
with features F_s, F_t of shape [C, H, W], S = ``n_samples`` and N = S*C*H*W:
  1. X = every channel repeated S times (copies adjacent) -> [S*C, H, W]; per pixel, sigma(h, w) =
     unbiased std over the S*C rows; X~ = X + sigma * eps, eps ~ N(0, 1), for student and teacher
     independently (sigma depends on the features and takes part in the student gradient, as in the
     released code).
  2. log q = log_softmax(X~_s) and p = softmax(X~_t) over the H (row) axis.
  3. L = mean over the N elements of p * (log p - log q), clamped >= 0; log p is taken of
     max(p, smallest normal float) so that an underflowed p = 0 contributes 0 (as xlogy would).
  4. G_q = dL/d(log q), G_p = dL/dp, the gradients the released code takes with
     ``torch.autograd.grad(create_graph=True)``. They have closed forms, G_q = -p/N and
     G_p = (log p - log q + 1)/N with log p as in step 3 (finite where p underflowed, where the exact
     derivative is -inf), and are computed so. They are the gradients of the unclamped mean
     (identical unless rounding makes L slightly negative).
  5. Fisher ("ent"): I = mean over (row copy, w) of (sum_h G**2) / max(L, eps), eps = 1e-12; the
     clamp only matters when L = 0 exactly (H = 1, or student equal to teacher with zero noise std),
     where it turns a division by zero into a large finite I and thus a vanishing 1/I.
  6. R = ||(1/I_q, 1/I_p)||_2 ("max_ent", norm 2); term = lam * R.

The student gradient of RRM is closed-form too. R depends on the student only through log q (in L
and in G_p). With A = sum p**2, B = sum (N G_p)**2 and K = N**2 * S*C*W, R = max(L, eps) * K * hypot(1/A, 1/B)
and
    dR/d(log q) = -(K * hypot / N) * [L >= eps] * p + 2 K max(L, eps) / (B**3 * hypot) * (N G_p),
which goes back through the row log-softmax and the perturbation (sigma included; zero where sigma = 0)
by hand. So each block of items yields its values and its gradient with respect to the student items
at once, in no-grad mode; only that gradient, [P, C, H, W] and S times smaller than the perturbed
tensors, is kept for the backward pass. Values and student gradients equal those of the released
double-backward route (the tests check both against a create_graph reference) at a fraction of its
time and memory.

Size normalisation of RRM (``normalize="size"``)
-----------------------------------------------
G_q = -p/N does not depend on the student, so exactly
    1/I_q = L * kappa,   kappa = N**2 * (S*C*W) / sum(p**2)   (sum over the N elements).
Because every column of p sums to 1 over H, sum(p**2) lies in [S*C*W/H, S*C*W], hence
kappa lies in [N**2, N**2 * H]: the raw term grows like (SCHW)**2 * H, from ~1e6 at 8x8 features to
~1e11 at stage 1 of a 256 crop, and by another ~256x at a 1024 crop. ``normalize="size"`` divides each
item's R by its own kappa, computed from the detached teacher distribution p (so it is a constant
rescaling per item that depends on no student parameter):
    R / kappa = L * sqrt(1 + (I_q / I_p)**2).
1/I_p is about 1/H**2 of 1/I_q in practice (p is ~1/H while log p - log q + 1 is O(1)), so the
normalised term is the per-element row-softmax feature KL L up to a tiny correction: O(KL), in the same
"mean" units as the logit KL and HPDM, at any C, H, W. Each item's gradient is its raw gradient divided
by its kappa. This choice (rather than one fixed size-only factor such as N**2 * H) makes the
normalised value exactly interpretable and removes the dependence on how peaked p is. What remains is
the dependence of L itself: as a "mean" over an H-way softmax it scales like 1/H for a given per-column
KL (stage 1 of a 256 crop, H = 64, weighs ~8x less than stage 4, H = 8), the same convention as the
division by K in the logit KL and HPDM. A lam of order 1 makes the normalised term comparable to them.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .distillation import check_stage_features, resolve_pairing
from .noise import standard_normal

#: ``normalize`` options of ``rrm_loss``.
RRM_NORMALIZATIONS: tuple[str, ...] = ("none", "size")
#: Lower bound on the RRM feature KL where it divides (Fisher estimate).
RRM_LOSS_EPSILON = 1e-12


def rrm_loss(
    student_features: Sequence[Tensor],
    teacher_features: Sequence[Tensor],
    student_present: Tensor,
    lam: float = 1e-5,
    n_samples: int = 10,
    normalize: str = "none",
    generator: torch.Generator | None = None,
    teacher_index: Tensor | None = None,
    max_block_elements: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Representation regularisation (Gat et al. "max_ent" on perturbed row-softmaxed features).

    Args:
        student_features: per stage [B, M, C_i, H_i, W_i].
        teacher_features: same shapes; detached here.
        student_present: [B, M] bool, the student modalities that take part.
        lam: lambda multiplying every item's regulariser R (1e-5 in the released main script).
        n_samples: S copies per channel for the perturbation (needs S*C >= 2).
        normalize: "none" (released code) or "size" (R / kappa, see the module docstring).
        generator: random source of the noise, on the features' device. Per stage one
            ``noise.standard_normal`` call draws [2, P, S*C, H, W]: the student's and then the
            teacher's noise for the P present items in row-major (sample, modality) order.
        teacher_index: [B, M] pairing, identity (released code) when None.
        max_block_elements: None = all present items of a stage in one batch (best on GPUs); else
            items go through in blocks of at most this many perturbed elements (S*C*H*W per item,
            at least one item per block). Values and gradients do not depend on it; it bounds the
            size of every temporary (a few MB each at 2**20).

    Returns:
        (loss, details): loss = (1/B) sum_n sum_stages sum_present lam * R (normalised or not);
        details = {"per_stage": [num_stages] detached stage contributions (they sum to loss),
        "raw_per_stage": the same without size normalisation, "feature_kl": [num_stages] mean over
        items of the perturbed feature KL L, "teacher_index": [B, M] int64 pairing used}.

    Computed in at least float32 (the raw R overflows float16). The student gradient is computed with
    the value (module docstring), so the loss can be back-propagated but not differentiated twice.
    """
    check_stage_features(student_features, teacher_features, student_present)
    if normalize not in RRM_NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; expected one of {RRM_NORMALIZATIONS}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if max_block_elements is not None and max_block_elements < 1:
        raise ValueError(f"max_block_elements must be >= 1 or None, got {max_block_elements}")
    teacher_index = resolve_pairing("identity", teacher_index, student_present, generator)
    batch = student_present.shape[0]
    sample_of_item, student_modality = student_present.nonzero(as_tuple=True)
    teacher_modality = teacher_index[sample_of_item, student_modality]
    stage_losses, raw_stage_losses, feature_kls = [], [], []
    for student_stage, teacher_stage in zip(student_features, teacher_features):
        compute_dtype = torch.promote_types(student_stage.dtype, torch.float32)
        student_items = student_stage[sample_of_item, student_modality].to(compute_dtype)
        teacher_items = teacher_stage.detach()[sample_of_item, teacher_modality].to(compute_dtype)
        student_noise, teacher_noise = _rrm_noise(student_items, n_samples, generator)
        with_gradient = torch.is_grad_enabled() and student_items.requires_grad
        block = _items_per_block(student_noise, max_block_elements)
        blocks = [
            _rrm_items(
                student_items[start:start + block], teacher_items[start:start + block],
                student_noise[start:start + block], teacher_noise[start:start + block], with_gradient,
            )
            for start in range(0, student_items.shape[0], block)
        ]
        values, gradients, size_factors, block_feature_kls = zip(*blocks)
        regulariser, size_factor, feature_kl = map(torch.cat, (values, size_factors, block_feature_kls))
        if with_gradient:
            regulariser = _GivenGradient.apply(student_items, regulariser, torch.cat(gradients))
        raw_stage_loss = lam * regulariser.sum() / batch
        if normalize == "size":
            stage_losses.append(lam * (regulariser / size_factor).sum() / batch)
        else:
            stage_losses.append(raw_stage_loss)
        raw_stage_losses.append(raw_stage_loss.detach())
        feature_kls.append(feature_kl.mean())
    per_stage = torch.stack(stage_losses)
    details = {
        "per_stage": per_stage.detach(),
        "raw_per_stage": torch.stack(raw_stage_losses),
        "feature_kl": torch.stack(feature_kls),
        "teacher_index": teacher_index,
    }
    return per_stage.sum(), details


class _GivenGradient(torch.autograd.Function):
    """Per-item values [P] of a function of ``items`` [P, ...] whose gradient [P, ...] is already known."""

    @staticmethod
    def forward(ctx, items: Tensor, values: Tensor, gradients: Tensor) -> Tensor:
        ctx.save_for_backward(gradients)
        return values.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_values: Tensor) -> tuple[Tensor, None, None]:
        (gradients,) = ctx.saved_tensors
        return _per_item(grad_values, gradients) * gradients, None, None


@torch.no_grad()
def _rrm_items(
    student_items: Tensor, teacher_items: Tensor, student_noise: Tensor, teacher_noise: Tensor, with_gradient: bool
) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Independent RRM items [P, C, H, W] with their standard noise [P, C, S, H, W]
    -> (R [P], dR/d(student items) [P, C, H, W] or None, kappa [P], clamped feature KL L [P]).

    Values and gradient are in closed form (module docstring, steps 4-6 and the student gradient), so
    no autograd graph over the [P, C, S, H, W] perturbations is built or kept.
    """
    elements = teacher_noise[0].numel()
    columns = teacher_noise.shape[1] * teacher_noise.shape[2] * teacher_noise.shape[-1]
    scale = float(elements) ** 2 * columns
    teacher_std, _ = _pixel_std(teacher_items, teacher_noise.shape[2])
    teacher_probs = F.softmax(_perturb(teacher_items, teacher_noise, teacher_std), dim=-2)
    teacher_square_sum = _item_dot(teacher_probs, teacher_probs)
    tiny = torch.finfo(teacher_probs.dtype).tiny
    student_std, student_std_gradient = _pixel_std(student_items, student_noise.shape[2])
    student_log_probs = F.log_softmax(_perturb(student_items, student_noise, student_std), dim=-2)
    log_ratio = teacher_probs.clamp_min(tiny).log_().sub_(student_log_probs)  # 0 * log 0 -> 0
    clamped_kl = _item_dot(teacher_probs, log_ratio).div_(elements).clamp_min_(0.0)
    teacher_grad = log_ratio.add_(1.0)  # N * G_p
    teacher_grad_square_sum = _item_dot(teacher_grad, teacher_grad)
    inverse_fishers = torch.hypot(1.0 / teacher_square_sum, 1.0 / teacher_grad_square_sum)
    bounded_kl = clamped_kl.clamp_min(RRM_LOSS_EPSILON)
    regulariser = bounded_kl * scale * inverse_fishers
    size_factor = scale / teacher_square_sum
    if not with_gradient:
        return regulariser, None, size_factor, clamped_kl
    kl_weight = -scale * inverse_fishers * (clamped_kl >= RRM_LOSS_EPSILON) / elements
    grad_square_weight = 2.0 * scale * bounded_kl / (teacher_grad_square_sum**3 * inverse_fishers)
    grad_log_probs = teacher_grad.mul_(_per_item(grad_square_weight, teacher_grad)).addcmul_(
        teacher_probs, _per_item(kl_weight, teacher_probs)
    )
    column_sums = grad_log_probs.sum(dim=-2, keepdim=True)
    grad_perturbed = grad_log_probs.addcmul_(student_log_probs.exp_(), column_sums, value=-1.0)
    grad_items = grad_perturbed.sum(dim=2)
    grad_std = grad_perturbed.mul_(student_noise).sum(dim=(1, 2))
    return regulariser, grad_items.addcmul_(student_std_gradient, grad_std[:, None]), size_factor, clamped_kl


def _item_dot(left: Tensor, right: Tensor) -> Tensor:
    """[P, ...] x [P, ...] -> [P]: per-item sum of the element-wise product."""
    return (left * right).flatten(1).sum(dim=1)


def _per_item(values: Tensor, like: Tensor) -> Tensor:
    """[P] -> [P, 1, ..., 1] broadcasting against ``like`` [P, ...]."""
    return values.view((-1,) + (1,) * (like.ndim - 1))


def _rrm_noise(items: Tensor, n_samples: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Independent N(0, 1) noise [P, C, S, H, W] of student and teacher for items [P, C, H, W] (memory
    order = the [P, S*C, H, W] rows), drawn in one ``standard_normal`` call."""
    batch, channels, height, width = items.shape
    if n_samples * channels < 2:
        raise ValueError(f"RRM needs n_samples * channels >= 2 for the noise std, got {n_samples * channels}")
    shape = (2, batch, channels, n_samples, height, width)
    student_noise, teacher_noise = standard_normal(shape, generator, items.device, items.dtype)
    return student_noise, teacher_noise


def _items_per_block(noise: Tensor, max_block_elements: int | None) -> int:
    """Number of items [P, ...] per block under the element budget (all P when None)."""
    items = noise.shape[0]
    if max_block_elements is None:
        return items
    return max(1, min(items, max_block_elements // noise[0].numel()))


def _pixel_std(items: Tensor, n_samples: int) -> tuple[Tensor, Tensor]:
    """items [P, C, H, W] -> (sigma [P, H, W], d sigma / d items [P, C, H, W], zero where sigma = 0).

    sigma is the unbiased std over the S*C rows at each pixel of the items with every channel repeated
    S times; it follows from the C channels without materialising the repetition.
    """
    factor = n_samples / (n_samples * items.shape[1] - 1)
    centred = items - items.mean(dim=1, keepdim=True)
    sigma = centred.square().sum(dim=1).mul_(factor).sqrt_()
    return sigma, centred.mul_(torch.where(sigma > 0, factor / sigma, 0.0)[:, None])


def _perturb(items: Tensor, standard_noise: Tensor, sigma: Tensor) -> Tensor:
    """items [P, C, H, W], noise [P, C, S, H, W], sigma [P, H, W] -> [P, C, S, H, W]: every channel
    repeated S times (copies adjacent, so ``flatten(1, 2)`` gives the [P, S*C, H, W] rows, formed by
    broadcasting) plus the noise scaled by sigma at each pixel."""
    return torch.addcmul(items[:, :, None], standard_noise, sigma[:, None, None])
