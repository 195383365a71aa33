"""The learner's side of a vision-language student: what the model's HF processor does to a prompt.

vLLM samples an image question from the chat-templated prompt ids, which hold ONE image placeholder token
per image, and expands each placeholder into as many tokens as the image has merged patches. The learner
must recompute logprobs, ratios and gradients on the same context, so it runs the model's own HF image
processor (pixel values and the patch grid, e.g. Qwen-VL's `image_grid_thw`) and expands the placeholders
the way the model's HF processor does (one token per `merge_size`² patches). Without this every RL update on
image data would be computed on a context the student never saw.

Why the image processor and not the whole `AutoProcessor`: a Qwen-VL processor also loads a video
processor, which needs torchvision, and PyPI's torchvision does not import beside the CPU torch here. The
image processor has a PIL backend (`Qwen2VLImageProcessorPil`, chosen by transformers when torchvision is
missing); the placeholder expansion is the processor's rule, written out below and tested against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from zppo_ray.engine.prompts import load_image


class VisionInputs:
    """Expands image placeholders and builds the model's pixel inputs for a batch of (prompt ids, images)."""

    def __init__(self, model_path: str, config: Any):
        from transformers import AutoImageProcessor

        self.image_processor = AutoImageProcessor.from_pretrained(model_path)
        self.image_token_id = int(config.image_token_id)
        self.merge = int(getattr(self.image_processor, "merge_size", 1))

    @staticmethod
    def for_model(model_path: str, config: Any) -> VisionInputs | None:
        """A VisionInputs for a vision-language config (one with `vision_config`), else None."""
        return VisionInputs(model_path, config) if getattr(config, "vision_config", None) is not None else None

    def expand(self, prompt_ids: Sequence[int], grids: torch.Tensor) -> list[int]:
        """`prompt_ids` with the k-th image placeholder repeated grids[k].prod() // merge² times."""
        slots = [i for i, t in enumerate(prompt_ids) if t == self.image_token_id]
        if len(slots) != len(grids):
            raise ValueError(f"the prompt holds {len(slots)} image placeholder(s) for {len(grids)} image(s)")
        out: list[int] = []
        last = 0
        for slot, grid in zip(slots, grids):
            out += list(prompt_ids[last:slot]) + [self.image_token_id] * (int(grid.prod()) // self.merge ** 2)
            last = slot + 1
        return out + list(prompt_ids[last:])

    def token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`mm_token_type_ids` as the processor returns them (1 = image token, 0 = text): Qwen-VL's
        multimodal RoPE places image tokens on a 2-D grid and needs to know which they are."""
        return (input_ids == self.image_token_id).long()

    def __call__(self, prompts: Sequence[Sequence[int]], images: Sequence[Sequence[Any]]
                 ) -> tuple[list[list[int]], dict[str, torch.Tensor]]:
        """Expanded prompt ids per row, and the model's image inputs for the whole batch (rows in order)."""
        flat = [load_image(im) for ims in images for im in ims]
        if not flat:
            return [list(p) for p in prompts], {}
        pixels = self.image_processor(images=flat, return_tensors="pt")
        grids = pixels["image_grid_thw"]
        out, k = [], 0
        for ids, ims in zip(prompts, images):
            out.append(self.expand(ids, grids[k:k + len(ims)]) if ims else list(ids))
            k += len(ims)
        return out, {"pixel_values": pixels["pixel_values"], "image_grid_thw": grids}
