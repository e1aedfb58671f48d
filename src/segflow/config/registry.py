"""params.yaml sections of the registry and the service: mlflow, promote, serve."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from segflow.config.base import Section

__all__ = ["Runtime", "MlflowParams", "PromoteParams", "ServeParams"]

#: `serve.runtime` (and `segflow serve --runtime`).
Runtime = Literal["auto", "int8", "fp32", "torch"]


class MlflowParams(Section):
    experiment: str = "segflow"
    #: Registered model name; each train run adds a version with alias `candidate`.
    model_name: str = "segflow-unet"


class PromoteParams(Section):
    """When `segflow promote` lets a candidate replace the `@champion` (same test split)."""

    #: The candidate's test mIoU must reach the champion's plus this (0 = at least as good).
    min_miou_gain: float = Field(0.0, ge=0.0, le=1.0)
    #: ...and no class's test IoU may fall more than this below the champion's, so a
    #: better mean cannot hide a class that got much worse.
    max_class_drop: float = Field(0.05, ge=0.0, le=1.0)


class ServeParams(Section):
    """`segflow export` (ONNX fp32 + int8 of a version) and `segflow serve` (web page + API)."""

    #: Where `segflow serve` listens; 127.0.0.1 = this machine only (0.0.0.0 to share it).
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    #: What runs the model: auto = the version's exported ONNX default (see
    #: max_int8_miou_loss), or its PyTorch checkpoint if it was never exported; or force
    #: int8 | fp32 (ONNX) | torch.
    runtime: Runtime = "auto"
    #: The int8 model becomes the exported default only if its test mIoU is at most this
    #: below the fp32 model's (0.01 = one point); otherwise fp32 is served.
    max_int8_miou_loss: float = Field(0.01, ge=0.0, le=1.0)
    #: Training images whose activations set the int8 ranges (static quantization).
    calibration_images: int = Field(32, ge=1)
    #: Largest request body in bytes (a multipart upload's framing counts too); the
    #: environment variable SEGFLOW_MAX_UPLOAD_BYTES overrides it per machine.
    max_upload_bytes: int = Field(20_000_000, ge=1)
    #: Seconds a request may take to send its whole body: a stalled or trickled upload
    #: (slowloris) is cut off with 408 after this, whatever it has sent.
    upload_seconds: float = Field(60.0, gt=0.0)
    #: Upload bytes held at once by all requests still sending or waiting for a turn (spooled
    #: to a temporary file past 1 MiB each): a request that would pass it gets 503 with
    #: Retry-After, so many slow uploads cannot fill the memory or the disk.
    max_buffered_bytes: int = Field(100_000_000, ge=1)
    #: Largest image in pixels, read from the header before decoding, so a decompression
    #: bomb (a small file that decodes to gigapixels) is refused; 50 MP fits a 48 MP photo.
    max_pixels: int = Field(50_000_000, ge=1)
    #: Smallest image side accepted: a 1x1 or 3x3 picture holds nothing to segment.
    min_side: int = Field(8, ge=1)
    #: Requests decoding, segmenting and encoding at once; each holds at most the bound in
    #: segflow.serving.app (1.15 GB for a 50 MP photo, 3 classes, at its own size), so this caps memory.
    max_concurrent: int = Field(2, ge=1)
    #: Seconds a request beyond max_concurrent waits for a turn before a 503 with Retry-After.
    queue_seconds: float = Field(10.0, ge=0.0)
    #: Seconds between checks whether @champion moved (0 = only on POST /reload).
    poll_seconds: float = Field(30.0, ge=0.0)
    #: Names the Host header may carry (without port); `host` is allowed too, unless it is
    #: 0.0.0.0 or ::. Anything else is refused with 400, so a web page whose domain is re-pointed
    #: at this machine (DNS rebinding) cannot use the service; "*" allows any name.
    allowed_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1", "localhost", "::1"])
    #: Serve the API's description (/docs, /redoc, /openapi.json). Off: it maps every endpoint
    #: for whoever can reach the service, and its pages load Swagger UI and ReDoc from a CDN.
    docs: bool = False

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, hosts: list[str]) -> list[str]:
        # A name, an IPv4 address or an IPv6 one (colons, no brackets), or "*": never a
        # scheme, a port or a path, which the Host check would silently never match.
        from ipaddress import IPv6Address

        name_chars = set("abcdefghijklmnopqrstuvwxyz0123456789.-_")
        for host in hosts:
            try:
                IPv6Address(host)
                is_ipv6 = True
            except ValueError:
                is_ipv6 = False
            if host != "*" and not is_ipv6 and not (host and set(host.lower()) <= name_chars):
                raise ValueError(
                    f"{host!r} is not a host name: give names as the Host header carries them, "
                    "without scheme or port (e.g. seg.example.com, 192.168.1.5, ::1), or '*' for any"
                )
        return [host.lower() for host in hosts]
