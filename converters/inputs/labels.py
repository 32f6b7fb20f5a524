"""``--labels FILE``: class names, one per line, in the order of the model's output classes (the
sorted class folders' order). They name the classes in every artifact's metadata, the report and
``invoke infer``; without the file the class folder names do."""

from __future__ import annotations

from pathlib import Path

from converters.errors import ConfigError

MAX_BYTES = 16 << 20  # ImageNet-21k's 21,843 names are 0.4 MiB
MAX_NAME_CHARACTERS = 1000


def read_labels(path: Path) -> tuple[str, ...]:
    """The class names in ``path`` (UTF-8, one per line; a final newline is optional)."""
    where = f"--labels {path}"
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ConfigError(f"{where} is not a file: pass a text file with one class name per line")
        if size > MAX_BYTES:
            raise ConfigError(f"{where} is {size / 2**20:.1f} MiB, over the {MAX_BYTES >> 20} MiB "
                              "a labels file may be: pass a text file with one class name per line")
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist: pass a text file with one class name per "
                          "line") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{where} is not UTF-8 text (byte {error.start}): save it as UTF-8, "
                          "one class name per line") from None
    except OSError as error:
        raise ConfigError(f"cannot read {where}: {error.strerror or error}") from None
    names = text.splitlines()
    if not names:
        raise ConfigError(f"{where} is empty: write one class name per line")
    for number, name in enumerate(names, start=1):
        if not name.strip():
            raise ConfigError(f"{where}: line {number} is empty; every line names one class "
                              "(in the order of the model's output classes)")
        if len(name) > MAX_NAME_CHARACTERS:
            raise ConfigError(f"{where}: line {number} has {len(name)} characters, over "
                              f"{MAX_NAME_CHARACTERS}: is it a labels file?")
    return tuple(name.strip() for name in names)
