"""This process's memory (Linux, /proc/self/status), for the proofs and benchmarks that measure
a peak: ``peak_reset()``, the work, then ``peak_rss_mb()``. No Django: benchmark scripts use it
before they set Django up."""

from __future__ import annotations

from pathlib import Path


def peak_reset() -> None:
    """Start the peak over from the present size (5 > /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """Peak resident memory since ``peak_reset`` (VmHWM), in MB."""
    return _status_mb("VmHWM")


def rss_mb() -> float:
    """Resident memory now (VmRSS), in MB."""
    return _status_mb("VmRSS")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")
