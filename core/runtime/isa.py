"""The CPU facts that decide INT8 accuracy: one reader for ``/proc/cpuinfo`` and the process's CPUID.

Why it matters: ONNX Runtime's x86 INT8 kernels multiply u8 activations by s8 weights. With
AVX-512 VNNI / AVX-VNNI (``vpdpbusd``) or AMX the products accumulate in int32; without
them (AVX2, AVX-512 without VNNI, SSE) they use ``vpmaddubsw``, which adds *pairs* of
u8 x s8 products into a saturating int16: 2 x 255 x 127 = 64770 > 32767. Full-range weights
then lose accuracy on those hosts only (the test suite's digits classifier: 35.8 dB SQNR on
a VNNI host, 9.3 dB under an emulated AVX2-only CPU); 7-bit weights (|w| <= 64) keep every
pair sum <= 32640 and give bit-identical results on both (34.2 dB). ARM's int8 paths
(NEON widening multiplies, ``sdot``/``udot`` dotprod, ``i8mm``) accumulate in 32 bits.

Two sources, one rule: the kernel the process runs is chosen by CPUID, so where NumPy's
runtime dispatcher (which executes CPUID) knows a feature, its answer wins over
``/proc/cpuinfo`` (emulators such as ``qemu-x86_64 -cpu Haswell`` and some hypervisors
report the host's flags there); features NumPy does not track (AVX-VNNI, AMX, i8mm) come
from ``/proc/cpuinfo``, but only where it describes the CPU the process runs on: where it claims a
feature the process's CPUID denies, it is another CPU's (an emulator's host), and its other flags
prove nothing here. Without that, a verify under ``qemu-x86_64 -cpu Haswell`` on an AMX host was
recorded as ``x86-amx`` (AMX and AVX-VNNI read from the host's cpuinfo) instead of ``x86-avx2``.
Torch-free: the runtime and ``eegsine-verify`` use it.
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Any

# canonical feature -> names it has in /proc/cpuinfo ("flags" on x86, "Features" on ARM)
CPUINFO_NAMES: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2",),
    "avx512bw": ("avx512bw",),
    "avx512_vnni": ("avx512_vnni", "avx512vnni"),
    "avx_vnni": ("avx_vnni",),
    "amx_int8": ("amx_int8",),
    "arm_dotprod": ("asimddp",),
    "arm_i8mm": ("i8mm",),
}
# canonical feature -> NumPy's CPU dispatch name (numpy._core._multiarray_umath.__cpu_features__)
NUMPY_NAMES: dict[str, str] = {"avx2": "AVX2", "avx512bw": "AVX512BW", "avx512_vnni": "AVX512VNNI",
                               "arm_dotprod": "ASIMDDP"}
FEATURES = tuple(CPUINFO_NAMES)

# ISA classes, from the most to the least capable int8 path
ISA_CLASSES = ("x86-amx", "x86-vnni", "x86-avx512", "x86-avx2", "x86-sse", "arm-i8mm", "arm-dotprod", "arm-neon",
               "other")
# classes whose u8 x s8 kernels add product pairs in saturating int16 (full-range weights degrade there)
SATURATING_CLASSES = frozenset({"x86-avx512", "x86-avx2", "x86-sse"})


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """``/proc/cpuinfo`` contents -> {"flags": set of flag names, "model": CPU model name or ""}."""
    flags: set[str] = set()
    model = ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:  # the first processor's line: all cores share the ISA
            flags = set(value.split())
        elif key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
    return {"flags": flags, "model": model}


def numpy_cpu_features() -> dict[str, bool] | None:
    """NumPy's CPUID-based feature table for this process, or None where this NumPy has none."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats  # NumPy >= 2
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as feats  # NumPy 1.x
        except ImportError:
            return None
    return dict(feats)


def int8_features(cpuinfo: str | None = None, cpuid: dict[str, bool] | None = None,
                  machine: str | None = None) -> dict[str, Any]:
    """The int8-relevant features of this CPU (or of the given ``cpuinfo`` text / ``cpuid`` table).

    Returns {"machine", "model", "features": {name: bool}, "source": {name: "cpuid"|"cpuinfo"|"absent"|
    "not-this-cpu"}, "cpuinfo_is_this_cpu": bool}. Pass ``cpuid={}`` to ignore the process's CPUID (tests with fake
    cpuinfo do).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    if cpuid is None:
        cpuid = numpy_cpu_features() or {}
    machine = (machine or platform.machine() or "").lower()
    info = parse_cpuinfo(cpuinfo)
    claimed = {name: any(a in info["flags"] for a in aliases) for name, aliases in CPUINFO_NAMES.items()}
    # a feature cpuinfo claims and the process's CPUID denies: cpuinfo describes another CPU (emulation)
    this_cpu = not any(claimed[n] and np_name in cpuid and not cpuid[np_name] for n, np_name in NUMPY_NAMES.items())
    feats: dict[str, bool] = {}
    source: dict[str, str] = {}
    for name in CPUINFO_NAMES:
        np_name = NUMPY_NAMES.get(name)
        if np_name is not None and np_name in cpuid:
            feats[name], source[name] = bool(cpuid[np_name]), "cpuid"
        elif info["flags"] and this_cpu:
            feats[name], source[name] = claimed[name], "cpuinfo"
        elif info["flags"]:  # unknown for the CPU the process runs on: not claimed (a slower class is the safe one)
            feats[name], source[name] = False, "not-this-cpu"
        else:
            feats[name], source[name] = False, "absent"
    return {"machine": machine, "model": info["model"], "features": feats, "source": source,
            "cpuinfo_is_this_cpu": this_cpu}


def isa_class(facts: dict[str, Any]) -> str:
    """The INT8 ISA class of :func:`int8_features` output (one of :data:`ISA_CLASSES`)."""
    f, m = facts["features"], facts.get("machine", "")
    if m in ("x86_64", "amd64", "i386", "i686", "x86"):
        if f["amx_int8"]:
            return "x86-amx"
        if f["avx512_vnni"] or f["avx_vnni"]:
            return "x86-vnni"
        if f["avx512bw"]:
            return "x86-avx512"
        return "x86-avx2" if f["avx2"] else "x86-sse"
    if m in ("aarch64", "arm64") or m.startswith("armv8"):
        if f["arm_i8mm"]:
            return "arm-i8mm"
        return "arm-dotprod" if f["arm_dotprod"] else "arm-neon"
    return "other"


def ort_facts() -> dict[str, Any]:
    """ONNX Runtime version and available providers (or why it is missing)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        return {"onnxruntime": f"not available ({e})", "providers": []}
    return {"onnxruntime": ort.__version__, "providers": list(ort.get_available_providers())}


def host_facts(cpuinfo: str | None = None, cpuid: dict[str, bool] | None = None,
               machine: str | None = None) -> dict[str, Any]:
    """Everything a bench or verification record names about the host's int8 path."""
    facts = int8_features(cpuinfo, cpuid, machine)
    cls = isa_class(facts)
    return {"isa_class": cls, "int8_features": sorted(k for k, v in facts["features"].items() if v),
            "u8s8_saturates": cls in SATURATING_CLASSES,
            "cpu": facts["model"] or platform.processor() or facts["machine"],
            "machine": facts["machine"], "feature_source": facts["source"],
            "emulated": not facts["cpuinfo_is_this_cpu"], **ort_facts()}


@functools.lru_cache(maxsize=1)
def this_host() -> dict[str, Any]:
    """:func:`host_facts` of the running process, read once (the runtime asks on every INT8 load)."""
    return host_facts()


def describe(facts: dict[str, Any] | None = None) -> str:
    """One line for table headers: 'AMD EPYC, x86-vnni (avx2, avx512_vnni, ...), onnxruntime 1.32.0'."""
    h = facts or this_host()
    return (f"{h['cpu']}, ISA class {h['isa_class']} (int8 features: {', '.join(h['int8_features']) or 'none'}), "
            f"onnxruntime {h['onnxruntime']}")
