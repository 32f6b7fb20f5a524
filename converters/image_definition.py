"""What a toolchain image is (its name, Dockerfile and what its containers need), and the core
image's name; building and listing images is converters/images.py."""

from __future__ import annotations

from dataclasses import dataclass

from converters import __version__

CORE_IMAGE = "tflite"  # TensorFlow, LiteRT, tf2onnx, onnxruntime: most stages run in it


@dataclass(frozen=True)
class ImageDefinition:
    name: str
    dockerfile: str
    platform: str | None = None  # forced platform (a tool that exists for amd64 only)
    bootstrappable: bool = True  # False: the base holds vendor libraries (an NGC image)
    gpus: bool = False  # its containers get --gpus all
    # Custom Ray resources a node must offer to run its stages (--executor ray), e.g. a node
    # that has a vendor compiler; with ``gpus`` the stages also need one GPU.
    resources: tuple[tuple[str, float], ...] = ()

    @property
    def tag(self) -> str:
        return f"tensor-edge-converter/{self.name}:{__version__}"
