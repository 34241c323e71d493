"""The CPU's name, as every benchmark under tools/ prints it beside its figures."""
from __future__ import annotations

import platform
from pathlib import Path

# The widest x86 vector extension the kernels can use, most capable first (kernels_dispatch.c's order).
_VECTOR_FLAGS = ("avx512_vnni", "avx512f", "avx2")


def cpu_name() -> str:
    """/proc/cpuinfo's model name with its family, model and widest vector ISA (Linux), else what
    `platform` knows.  A VM's model name is often just "AMD EPYC" for Zen 3, 4 and 5 alike, and
    the kernels, so the ratios, differ between them: the family / model numbers tell them apart."""
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first CPU is enough
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        name = fields.get("model name")
        if name:
            flags = set(fields.get("flags", "").split())
            isa = next((f for f in _VECTOR_FLAGS if f in flags), None)
            extra = [f"family {fields['cpu family']} model {fields['model']}"] if "cpu family" in fields else []
            extra += [isa] if isa else []
            return f"{name} ({', '.join(extra)})" if extra else name
    except (OSError, KeyError):
        pass
    return platform.processor() or platform.machine() or "unknown"
