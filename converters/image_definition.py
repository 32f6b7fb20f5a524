"""What a toolchain image is (its name, Dockerfile and what its containers need), and the core
image's name; building and listing images is converters/runners/images.py."""

from __future__ import annotations

from dataclasses import dataclass

from converters import __version__

CORE_IMAGE = "tflite"  # TensorFlow, LiteRT, tf2onnx, onnxruntime: most stages run in it


@dataclass(frozen=True)
class ImageDefinition:
    name: str
    dockerfile: str
    platform: str | None = None  # forced platform (a tool that exists for amd64 only)
    # Why ``--base bootstrap`` cannot make this image's base (it holds a vendor's libraries),
    # and how to build it instead; empty: a Debian base made with debootstrap will do.
    not_bootstrappable: str = ""
    # What its build log says when a vendor's source is out of reach → what the user should do.
    build_failures: tuple[tuple[str, str], ...] = ()
    gpus: bool = False  # its containers get --gpus all
    # Custom Ray resources a node must offer to run its stages (--executor ray), e.g. a node
    # that has a vendor compiler; with ``gpus`` the stages also need one GPU.
    resources: tuple[tuple[str, float], ...] = ()

    @property
    def bootstrappable(self) -> bool:
        return not self.not_bootstrappable

    @property
    def tag(self) -> str:
        return f"tensor-edge-converter/{self.name}:{__version__}"
