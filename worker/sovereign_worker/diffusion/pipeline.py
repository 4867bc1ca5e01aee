"""The Stable Diffusion pipeline: loaded from the verified folder only, run on one device.

torch, diffusers and Pillow are imported when the engine starts, not when the package is
imported: the renderer imports `sovereign_worker.diffusion.launch`, and neither it nor the
type checker has them. They are looked up with importlib, so they are typed Any here.
"""

from __future__ import annotations

import base64
import importlib
import io
import logging
from pathlib import Path
from typing import Any, Final

from sovereign_worker.diffusion.image_request import ImageRequest
from sovereign_worker.diffusion.launch import DiffusersDtype

log = logging.getLogger(__name__)
_DTYPES: Final = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


class ImagePipeline:
    """A loaded pipeline; `generate` blocks, and calls from several threads may overlap.

    Schedulers keep per-run state (the timesteps), so each call gets a fresh scheduler in a
    pipeline view sharing the loaded weights, as diffusers' server example does.
    """

    def __init__(self, model_dir: Path, dtype: DiffusersDtype) -> None:
        torch = importlib.import_module("torch")
        diffusers = importlib.import_module("diffusers")
        self._torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # Half precision is the GPU norm; on CPUs many kernels lack it or are slower.
        name = _DTYPES.get(dtype) or ("float16" if self.device == "cuda" else "float32")
        self.dtype = name
        pipeline = diffusers.StableDiffusionPipeline.from_pretrained(
            str(model_dir),
            # Never reach a hub, whatever the environment says; the folder is all there is.
            local_files_only=True,
            # Refuse pickled .bin weights: unpickling can run code; safetensors cannot.
            use_safetensors=True,
            torch_dtype=getattr(torch, name),
        )
        pipeline.set_progress_bar_config(disable=True)
        self._pipeline = pipeline.to(self.device)
        log.info("loaded %s on %s in %s", model_dir, self.device, name)

    def generate(self, request: ImageRequest) -> list[bytes]:
        """The request's images as PNG bytes."""
        generator = None
        if request.seed is not None:
            generator = self._torch.Generator(device=self.device).manual_seed(request.seed)
        options: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "num_images_per_prompt": request.n,
            "width": request.width,
            "height": request.height,
            "num_inference_steps": request.steps,
            "generator": generator,
            "output_type": "pil",
        }
        if request.guidance_scale is not None:
            options["guidance_scale"] = request.guidance_scale
        pipeline = self._view()
        with self._torch.inference_mode():
            images = pipeline(**options).images
        return [_png(image) for image in images]

    def _view(self) -> Any:
        """A pipeline sharing the loaded modules, with a scheduler of its own.

        Built with the constructor rather than `from_pipe`, which casts every shared module
        to its `torch_dtype` argument (float32 unless given): a half-precision engine would
        be converted under requests already running.
        """
        shared = self._pipeline
        components = {
            **shared.components,
            "scheduler": shared.scheduler.from_config(shared.scheduler.config),
        }
        view = type(shared)(
            **components, requires_safety_checker=shared.config.requires_safety_checker
        )
        view.set_progress_bar_config(disable=True)
        return view


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64_png(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
