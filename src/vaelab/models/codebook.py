"""A codebook of K vectors and the nearest-neighbour quantisation onto it: the core of VQ-VAE.

van den Oord, Vinyals & Kavukcuoglu (2017), *Neural Discrete Representation Learning*, NeurIPS:

* quantisation (eq. 1–2): z_q(x) = e_k with k = argmin_j ‖z_e(x) − e_j‖₂, for each of the encoder's output vectors;
* the two terms of the loss that train the codebook and the encoder around the quantisation (eq. 3): the codebook
  term ‖sg[z_e(x)] − e‖² moves the chosen vectors towards the encoder's outputs, the commitment term
  ‖z_e(x) − sg[e]‖² keeps the encoder's outputs near their vectors (sg: stop-gradient). Both have the same value;
  only their gradients differ (the codebook's and the encoder's);
* the exponential moving average update of the codebook instead of its loss (sec. 3.2 and app. A.1, with the
  Laplace-smoothed counts of the authors' Sonnet implementation): per code k, with n_k the vectors of the batch it
  was chosen for and s_k their sum,

      N_k ← γ N_k + (1 − γ) n_k,    m_k ← γ m_k + (1 − γ) s_k,
      Ñ_k = (N_k + ε) / (Σ_j N_j + K ε) · Σ_j N_j,    e_k = m_k / Ñ_k,

  with decay γ (0.99) and ε (1e-5) keeping a code that is never chosen away from a division by zero; N starts at 1
  and m at the initial vectors, so e starts where the codebook was initialised.

Codes that the encoder stops choosing are dead weight: a code unused for ``dead_code_steps`` training steps in a
row is moved onto an encoder output of the current batch drawn at random (the restart of Dhariwal et al. 2020,
*Jukebox*, sec. 3.3). The draw uses torch's global generator, so a seeded run repeats it.

The codebook changes only in training mode (EMA updates, restarts and the step counts): a model in eval mode, such
as the frozen first stage under a learned prior, leaves it as it is. Under distributed training every process makes
the same change: the counts and sums are summed over the processes (the EMA of the global batch), and a restarted
code takes the vector process 0 drew.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(H(p)) of the code use p_k = counts_k / Σ counts: K when every code is used equally, 1 for a single code
    (0 log 0 = 0). The number of codes the batch effectively uses."""
    p = counts.double() / counts.sum().clamp(min=1)
    entropy = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum()
    return entropy.exp().to(torch.float32)


class Codebook(nn.Module):
    """K vectors of size D (``vectors``, (K, D)), the quantisation of encoder outputs onto them and their update.

    Args:
        num_codes: K.
        dim: D, the vectors' size (the model's ``latent_dim``).
        ema: update the vectors by exponential moving averages (then they are a buffer, not trained by the loss:
            the codebook term is left out); otherwise they are a parameter trained by the codebook term.
        decay: γ of the moving averages.
        epsilon: ε of the Laplace smoothing of the counts.
        dead_code_steps: restart a code unused for this many training steps in a row (0: never).
    """

    def __init__(self, num_codes: int, dim: int, ema: bool = False, decay: float = 0.99, epsilon: float = 1e-5,
                 dead_code_steps: int = 100) -> None:
        super().__init__()
        if num_codes < 2:
            raise ValueError(f"model.code.num_codes = {num_codes} is invalid: a codebook needs at least 2 vectors")
        if not 0 < decay < 1:
            raise ValueError(f"model.code.decay = {decay} is invalid: the EMA decay must be in (0, 1), e.g. 0.99")
        if not epsilon > 0:
            raise ValueError(f"model.code.epsilon = {epsilon} is invalid: it must be > 0, e.g. 1e-5")
        if dead_code_steps < 0:
            raise ValueError(f"model.code.dead_code_steps = {dead_code_steps} is invalid: it must be >= 0 (0: never "
                             "restart unused codes)")
        self.num_codes, self.dim, self.ema = int(num_codes), int(dim), bool(ema)
        self.decay, self.epsilon, self.dead_code_steps = float(decay), float(epsilon), int(dead_code_steps)
        init = torch.empty(self.num_codes, self.dim).uniform_(-1.0 / self.num_codes, 1.0 / self.num_codes)
        if self.ema:
            self.register_buffer("vectors", init)
            self.register_buffer("ema_count", torch.ones(self.num_codes))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.vectors = nn.Parameter(init)
        #: training steps since each code was last chosen
        self.register_buffer("idle_steps", torch.zeros(self.num_codes, dtype=torch.long))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """The index of the nearest vector (Euclidean) of each row of ``flat`` (N, D): (N,)."""
        vectors = self.vectors.detach()
        distances = flat.detach().pow(2).sum(1, keepdim=True) - 2 * flat.detach() @ vectors.T + vectors.pow(2).sum(1)
        return distances.argmin(1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """The vectors of ``indices`` (any shape), with a trailing axis of size D."""
        return F.embedding(indices, self.vectors)

    @torch.no_grad()
    def update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        """One training step's change to the codebook, given the encoder outputs ``flat`` (N, D) and the codes they
        were quantised to: the EMA update (when ``ema``), then the restart of the codes dead for too long."""
        counts = torch.bincount(indices, minlength=self.num_codes)
        sums = None
        if self.ema:
            sums = torch.zeros_like(self.vectors).index_add_(0, indices, flat.detach().to(self.vectors.dtype))
        if _distributed():  # the global batch's, so every process makes the same update
            dist.all_reduce(counts)
            if sums is not None:
                dist.all_reduce(sums)
        if self.ema:
            self.ema_step(counts, sums)
        if self.dead_code_steps:
            self.restart_dead(flat, counts)

    @torch.no_grad()
    def ema_step(self, counts: torch.Tensor, sums: torch.Tensor) -> None:
        """N ← γN + (1−γ)n, m ← γm + (1−γ)s, e = m / Ñ with Laplace-smoothed counts Ñ (see the module's docstring),
        given each code's count n and sum s of the vectors quantised to it."""
        self.ema_count.mul_(self.decay).add_(counts.to(self.ema_count.dtype), alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.epsilon) / (total + self.num_codes * self.epsilon) * total
        self.vectors.copy_(self.ema_sum / smoothed.unsqueeze(1))

    @torch.no_grad()
    def restart_dead(self, flat: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Count the steps each code went unused (``counts``: how often each was chosen); move each code unused for
        ``dead_code_steps`` steps onto a random row of ``flat`` (distinct rows while the batch has enough; process
        0's rows under distributed training). Returns the indices of the codes restarted."""
        self.idle_steps.add_(1).masked_fill_(counts > 0, 0)
        dead = (self.idle_steps >= self.dead_code_steps).nonzero().flatten()
        if len(dead) == 0 or len(flat) == 0:
            return dead
        if len(flat) >= len(dead):
            rows = torch.randperm(len(flat), device=flat.device)[: len(dead)]
        else:
            rows = torch.randint(len(flat), (len(dead),), device=flat.device)
        chosen = flat.detach()[rows].to(self.vectors.dtype).contiguous()
        if _distributed():
            dist.broadcast(chosen, src=0)
        self.vectors.data[dead] = chosen
        if self.ema:  # the averages restart there too, as if the code had been chosen for that vector alone
            self.ema_count[dead] = 1.0
            self.ema_sum[dead] = chosen
        self.idle_steps[dead] = 0
        return dead
