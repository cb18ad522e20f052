"""What each of two processes runs in the distributed codebook test of test_vqvae.py (a module of its own, so the
spawned processes import torch and the codebook only)."""

from __future__ import annotations

import torch

from vaelab.models.codebook import Codebook


def update_on_one_of_two_processes(rank: int, init_file: str, results: str) -> None:
    """Three training steps of a codebook (plain and EMA) on other data than the other process's; its state saved."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        for ema in (False, True):
            torch.manual_seed(0)  # the same codebook on both processes, as DDP starts them
            book = Codebook(num_codes=6, dim=2, ema=ema, dead_code_steps=1)
            torch.manual_seed(100 + rank)  # other data and other random draws on each
            for _ in range(3):
                flat = torch.randn(5, 2) * (1 + rank)
                book.update(flat, book.nearest(flat))
            torch.save({k: v.clone() for k, v in book.state_dict().items()}, f"{results}.{ema}.{rank}")
    finally:
        torch.distributed.destroy_process_group()
