"""The CPU facts every validation record and latency line carries, read from /proc/cpuinfo
texts of the CPU classes int8 results depend on (x86-64 with and without VNNI, Arm)."""

from __future__ import annotations

import platform

from converters.cpu import parse_cpuinfo, this_cpu

EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
"""
SKYLAKE_X = ("model name\t: Intel(R) Xeon(R) Gold 6148\nflags\t\t: avx avx2 avx512f avx512bw "
             "avx512vl\n")
ICE_LAKE = ("model name\t: Intel(R) Xeon(R) Platinum 8375C\nflags\t\t: avx2 avx512f avx512bw "
            "avx512_vnni\n")
ALDER_LAKE = "model name\t: 12th Gen Intel(R) Core(TM) i7-12700\nflags\t\t: avx2 avx_vnni\n"
GRAVITON2 = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\n"
CORTEX_A72 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n"


def test_x86_without_vnni_says_so() -> None:
    cpu = parse_cpuinfo(EPYC_AVX2, "x86_64")
    assert cpu.features == ("AVX2",) and cpu.int8_dot_product is False
    assert cpu.summary() == "x86_64 AMD EPYC: AVX2, no AVX-512, no VNNI"
    skylake = parse_cpuinfo(SKYLAKE_X, "x86_64")
    assert skylake.summary() == "x86_64 Intel(R) Xeon(R) Gold 6148: AVX2, AVX-512, no VNNI"


def test_x86_vnni_in_either_form() -> None:
    ice_lake = parse_cpuinfo(ICE_LAKE, "x86_64")
    assert ice_lake.int8_dot_product and ice_lake.features == ("AVX2", "AVX-512", "AVX512-VNNI")
    alder_lake = parse_cpuinfo(ALDER_LAKE, "x86_64")
    assert alder_lake.int8_dot_product
    assert alder_lake.summary().endswith(": AVX2, AVX-VNNI, no AVX-512")


def test_arm_neon_and_dot_product() -> None:
    graviton = parse_cpuinfo(GRAVITON2, "aarch64")
    assert graviton.features == ("NEON", "NEON dot product") and graviton.int8_dot_product
    pi4 = parse_cpuinfo(CORTEX_A72, "aarch64")
    assert pi4.summary() == "aarch64: NEON, no dot product" and pi4.int8_dot_product is False


def test_unknown_extensions_are_not_guessed() -> None:
    cpu = parse_cpuinfo("", "x86_64")
    assert cpu.int8_dot_product is None and cpu.summary() == "x86_64 (extensions unknown)"


def test_this_cpu_is_a_record() -> None:
    record = this_cpu().as_record()
    assert record["arch"] == platform.machine() and record["summary"] == this_cpu().summary()
    assert set(record) == {"arch", "model", "features", "int8_dot_product", "summary"}
