"""The ISA helper on fake /proc/cpuinfo contents: every class the INT8 code paths distinguish."""
from __future__ import annotations

import pytest

from eegsine.runtime.isa import SATURATING_CLASSES, host_facts, int8_features, isa_class, parse_cpuinfo

_BASE = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat mmx fxsr sse sse2 ssse3 sse4_1 sse4_2 popcnt"
_AVX2 = _BASE + " avx f16c fma bmi1 avx2 bmi2"


def _x86(flags: str, model: str = "Test CPU") -> str:
    return "".join(f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: {model}\nflags\t\t: {flags}\n\n"
                   for i in range(2))


def _arm(features: str) -> str:
    return f"processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: {features}\nCPU implementer\t: 0x41\n\n"


CASES = [
    ("AMD EPYC 7B12 (Rome, AVX2 only)", _x86(_AVX2 + " sha_ni clzero"), "x86_64", "x86-avx2"),
    ("Skylake-SP (AVX-512 without VNNI)", _x86(_AVX2 + " avx512f avx512dq avx512cd avx512bw avx512vl"), "x86_64",
     "x86-avx512"),
    ("Cascade Lake (AVX-512 VNNI)", _x86(_AVX2 + " avx512f avx512bw avx512vl avx512_vnni"), "x86_64", "x86-vnni"),
    ("Alder Lake (AVX-VNNI, no AVX-512)", _x86(_AVX2 + " avx_vnni"), "x86_64", "x86-vnni"),
    ("Sapphire Rapids (AMX)", _x86(_AVX2 + " avx512f avx512bw avx512_vnni avx_vnni amx_bf16 amx_tile amx_int8"),
     "x86_64", "x86-amx"),
    ("Westmere (SSE only)", _x86(_BASE), "x86_64", "x86-sse"),
    ("Neoverse N1 (Graviton2, dotprod)", _arm("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                                              "asimdrdm lrcpc dcpop asimddp ssbs"),
     "aarch64", "arm-dotprod"),
    ("Neoverse V1 (Graviton3, i8mm)", _arm("fp asimd aes asimddp sve asimdfhm i8mm bf16 svei8mm"), "aarch64",
     "arm-i8mm"),
    ("Cortex-A53 (NEON only)", _arm("fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"), "aarch64", "arm-neon"),
]


@pytest.mark.parametrize("name,text,machine,want", CASES, ids=[c[0] for c in CASES])
def test_isa_class_from_fake_cpuinfo(name, text, machine, want):
    facts = int8_features(cpuinfo=text, cpuid={}, machine=machine)  # cpuid={}: ignore this host's CPUID
    assert isa_class(facts) == want
    h = host_facts(cpuinfo=text, cpuid={}, machine=machine)
    assert h["isa_class"] == want
    assert h["u8s8_saturates"] == (want in {"x86-avx2", "x86-avx512", "x86-sse"})
    assert set(facts["source"].values()) == {"cpuinfo"}


def test_parse_cpuinfo_reads_first_flags_line_and_model():
    info = parse_cpuinfo(_x86("sse avx2", model="AMD EPYC 7B12"))
    assert info == {"flags": {"sse", "avx2"}, "model": "AMD EPYC 7B12"}


def test_cpuid_wins_over_cpuinfo_for_features_it_knows():
    # an emulator (qemu-x86_64 -cpu Haswell) shows the host's flags in /proc/cpuinfo, but the process's
    # CPUID (what ORT's kernel dispatch reads) has no VNNI: the CPUID answer decides
    text = _x86(_AVX2 + " avx512f avx512bw avx512_vnni")
    facts = int8_features(cpuinfo=text, cpuid={"AVX2": True, "AVX512BW": False, "AVX512VNNI": False}, machine="x86_64")
    assert facts["features"]["avx512_vnni"] is False and facts["source"]["avx512_vnni"] == "cpuid"
    assert isa_class(facts) == "x86-avx2"
    # features CPUID tables do not track (AMX) still come from cpuinfo
    amx = int8_features(cpuinfo=_x86(_AVX2 + " amx_int8"), cpuid={"AVX2": True, "AVX512VNNI": False}, machine="x86_64")
    assert amx["source"]["amx_int8"] == "cpuinfo" and isa_class(amx) == "x86-amx"


def test_no_information_is_not_read_as_a_fast_isa():
    facts = int8_features(cpuinfo="", cpuid={}, machine="x86_64")
    assert set(facts["source"].values()) == {"absent"}
    assert isa_class(facts) == "x86-sse" and "x86-sse" in SATURATING_CLASSES
    assert isa_class(int8_features(cpuinfo="", cpuid={}, machine="riscv64")) == "other"


def test_env_report_names_this_hosts_int8_class():
    from eegsine.commands.main import env_report
    from eegsine.runtime.isa import this_host

    rep = env_report()
    assert rep["int8_isa_class"].split()[0] == this_host()["isa_class"]
    assert rep["int8_features"] == (", ".join(this_host()["int8_features"]) or "none")
    assert rep["onnxruntime"] == this_host()["onnxruntime"]
