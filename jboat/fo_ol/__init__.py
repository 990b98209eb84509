"""First-order operators (no Hessians, no trajectory)."""

__all__ = []
