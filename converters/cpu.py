"""The CPU a stage runs on, as far as it changes quantized results and latency: the vector and
int8 dot-product extensions (AVX2, AVX-512, VNNI on x86-64; NEON and its dot product on Arm).

An int8 model's latency, and on x86-64 without VNNI even its outputs (onnxruntime's u8s8
kernels add pairs of products into int16 there), depend on these, so every validation record
and latency figure names them. Read from /proc/cpuinfo (Linux); elsewhere only the machine
name is known, and the record says so.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
# /proc/cpuinfo flag → the name people know it by, in the order a summary lists them.
X86_FEATURES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI",
                "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8"}
ARM_FEATURES = {"asimd": "NEON", "asimddp": "NEON dot product", "i8mm": "I8MM", "sve": "SVE"}
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@dataclass(frozen=True)
class CpuInfo:
    """What a record says of the CPU: its architecture, model name and relevant extensions."""

    arch: str
    model: str
    features: tuple[str, ...]  # the names of X86_FEATURES / ARM_FEATURES this CPU has
    int8_dot_product: bool | None  # VNNI (x86-64) or the NEON dot product (Arm); None: unknown

    def summary(self) -> str:
        """One line for reports: 'x86_64 AMD EPYC: AVX2, no AVX-512, no VNNI'."""
        name = f"{self.arch} {self.model}".strip()
        if self.int8_dot_product is None and not self.features:
            return f"{name} (extensions unknown)"
        listed = list(self.features)
        if self.arch in ("x86_64", "AMD64", "i686"):
            if "AVX-512" not in listed:
                listed.append("no AVX-512")
            if not self.int8_dot_product:
                listed.append("no VNNI")
        elif self.arch in ("aarch64", "arm64") and not self.int8_dot_product:
            listed.append("no dot product")
        return f"{name}: {', '.join(listed)}" if listed else name

    def as_record(self) -> dict[str, Any]:
        return {**asdict(self), "features": list(self.features), "summary": self.summary()}


def parse_cpuinfo(text: str, arch: str) -> CpuInfo:
    """CpuInfo from the text of /proc/cpuinfo (the first processor's flags)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    model = fields.get("model name") or fields.get("cpu model") or fields.get("hardware", "")
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    known = X86_FEATURES if "flags" in fields else ARM_FEATURES
    features = tuple(name for flag, name in known.items() if flag in flags)
    dot = bool(flags & VNNI_FLAGS) if known is X86_FEATURES else "asimddp" in flags
    return CpuInfo(arch=arch, model=model, features=features,
                   int8_dot_product=dot if flags else None)


@functools.lru_cache(maxsize=1)
def this_cpu() -> CpuInfo:
    """The CPU this process runs on."""
    arch = platform.machine() or "unknown CPU"
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:  # not Linux
        return CpuInfo(arch=arch, model=platform.processor(), features=(), int8_dot_product=None)
    return parse_cpuinfo(text, arch)


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a container's cpuset),
    else the machine's count. What --threads and --jobs auto default to."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity on this system (macOS, Windows)
        return os.cpu_count() or 1
