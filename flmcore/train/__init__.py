"""Training procedures of flmcore (torch): DRN-SSR alternation, ATDP and pose-balanced
samplers (DDP-aware), self-training with curriculum.

Each topic adds its re-export lines below (only add lines).
"""
__all__ = []
