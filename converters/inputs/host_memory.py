"""The memory this machine has free, and whether a model's samples fit in it.

A model may declare an input no machine can hold (1 x 100000 x 100000 x 3 floats: 112 GiB a
sample). Without a check the data stage reads the dataset into arrays of that shape and the
process grows until the kernel kills it, minutes later. The export stage records how many bytes
one sample of the inputs takes and the largest activation the traced graph declares; the export
and data stages compare them with the memory available before allocating anything.
"""

from __future__ import annotations

from converters.errors import ModelError

MEMINFO = "/proc/meminfo"


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes, None where there is no such file."""
    try:
        with open(MEMINFO, encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def gib(count: int) -> str:
    return f"{count / 2**30:.1f} GiB"


def check_fits(model: str, sample_bytes: int, largest_activation_bytes: int, samples: int,
               available: int | None) -> None:
    """Refuse (ModelError, with the numbers) a model one of whose samples, run through the
    graph, or ``samples`` of whose inputs, need more than ``available`` bytes (None: unknown,
    nothing is checked)."""
    if available is None:
        return
    one = sample_bytes + 2 * largest_activation_bytes  # the input, a layer's input and output
    if one > available:
        raise ModelError(
            f"model {model} needs about {gib(one)} to run one sample ({gib(sample_bytes)} of "
            f"input, activations up to {gib(largest_activation_bytes)}), and this machine has "
            f"{gib(available)} available: check the model's declared input shape (or pass "
            "--input-shape), or build on a machine with more memory")
    if samples * sample_bytes > available:
        raise ModelError(
            f"the {samples} calibration and validation samples of model {model} need about "
            f"{gib(samples * sample_bytes)} ({gib(sample_bytes)} each), and this machine has "
            f"{gib(available)} available: lower --calibration-size and --validation-size, or "
            "build on a machine with more memory")
