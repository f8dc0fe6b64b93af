"""Human-readable sizes."""

from __future__ import annotations


def format_bytes(value: int | float) -> str:
    """1536 -> '1.5 KiB'; 7.2 GiB stays '7.2 GiB'."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"
