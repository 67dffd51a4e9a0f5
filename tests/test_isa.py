"""The ISA helper on fake /proc/cpuinfo contents: every class the INT8 code paths distinguish."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys

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


def test_emulated_cpu_is_classed_by_what_the_process_runs_on():
    # qemu-x86_64 -cpu Haswell on a Sapphire Rapids host: /proc/cpuinfo is the host's (AMX, AVX-VNNI, AVX-512),
    # the process's CPUID is Haswell's. A flag CPUID denies shows cpuinfo is another CPU's, so AMX and AVX-VNNI
    # (which CPUID tables here do not track) are not read from it either
    spr = _x86(_AVX2 + " avx512f avx512bw avx512_vnni avx_vnni amx_bf16 amx_tile amx_int8")
    haswell = {"AVX2": True, "AVX512BW": False, "AVX512VNNI": False}
    facts = int8_features(cpuinfo=spr, cpuid=haswell, machine="x86_64")
    assert isa_class(facts) == "x86-avx2" and facts["cpuinfo_is_this_cpu"] is False
    assert facts["source"]["amx_int8"] == "not-this-cpu" and not facts["features"]["avx_vnni"]
    h = host_facts(cpuinfo=spr, cpuid=haswell, machine="x86_64")
    assert h["emulated"] and h["u8s8_saturates"] and h["isa_class"] == "x86-avx2"
    # the same host natively: CPUID agrees with cpuinfo, which is then trusted for AMX
    native = int8_features(cpuinfo=spr, cpuid={"AVX2": True, "AVX512BW": True, "AVX512VNNI": True}, machine="x86_64")
    assert isa_class(native) == "x86-amx" and native["cpuinfo_is_this_cpu"]


@pytest.mark.skipif(shutil.which("qemu-x86_64") is None or platform.machine() != "x86_64",
                    reason="needs qemu-user on x86_64 (`make qemu` installs Debian's qemu-user)")
def test_isa_class_under_qemu_haswell_is_avx2():
    """The real thing: under ``qemu-x86_64 -cpu Haswell-v4`` the process runs AVX2 code whatever the host is."""
    code = "import json; from eegsine.runtime.isa import this_host; print(json.dumps(this_host()))"
    r = subprocess.run([shutil.which("qemu-x86_64"), "-cpu", "Haswell-v4", sys.executable, "-P", "-c", code],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    h = json.loads(r.stdout.strip().splitlines()[-1])
    assert h["isa_class"] == "x86-avx2" and h["u8s8_saturates"], h
    assert not {"amx_int8", "avx_vnni", "avx512_vnni", "avx512bw"} & set(h["int8_features"]), h
    host_flags = parse_cpuinfo(open("/proc/cpuinfo").read())["flags"]
    assert h["emulated"] == bool({"avx512bw", "avx512_vnni"} & host_flags)  # detectable where the host has more
