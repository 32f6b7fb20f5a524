"""What a model's input or output is (name, per-sample shape, dtype), as the export stage's
model.json records it. Plain data: planning and the report read it without loading a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IMAGE_CHANNELS = (1, 3, 4)  # grayscale, RGB, RGBA


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output: its signature name and per-sample shape (batch excluded)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    @property
    def is_image(self) -> bool:
        """Height × width × 1, 3 or 4 channels: an image folder can feed it."""
        return len(self.shape) == 3 and self.shape[-1] in IMAGE_CHANNELS

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> TensorInfo:
        return TensorInfo(data["name"], tuple(data["shape"]), data.get("dtype", "float32"))


def tensors(model_info: dict[str, Any], kind: str) -> tuple[TensorInfo, ...]:
    """The ``"inputs"`` or ``"outputs"`` of an export stage's model.json."""
    return tuple(TensorInfo.from_dict(item) for item in model_info[kind])
