"""The student's view of a prompt: chat-templated token ids, and images as PIL images.

Light on purpose (no vLLM import): the trainer, the learner, the toy world's pretraining and the engine all
build prompt ids here, so their ids cannot drift apart.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any


def load_image(image: Any) -> Any:
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - PIL ships with vllm
        raise RuntimeError("image inputs need Pillow (PIL), which is not installed in this environment") from e
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (bytes, bytearray)):
        return Image.open(io.BytesIO(image)).convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        return Image.open(image).convert("RGB")
    raise TypeError(f"an image must be a path, bytes or PIL.Image, got {type(image).__name__}")


# Stands in for each message's text while the chat template is rendered; never a special token, never text
# a data set contains (NUL bytes are refused by the loaders).
_SLOT = "\x00zppo:{}\x00"


def chat_prompt_ids(tokenizer: Any, prompt: str | list[dict], n_images: int = 0, thinking: bool = True) -> list[int]:
    """Chat-templated prompt token ids (user message = `prompt` when it is a string), exactly what a
    rollout's `prompt_ids` hold: every place that builds a student prompt by hand must agree with it.

    Message text is untrusted (questions, candidates, model output): a `<|im_end|>` inside it must stay text,
    not become the control token that ends the turn. So the template is rendered around placeholders, its
    own parts are tokenized with special tokens, and each message's text with special tokens split into
    ordinary pieces. `thinking=False` turns the template's thinking switch off where it has one
    (`enable_thinking`, Qwen3-family templates); elsewhere it changes nothing.
    """
    if isinstance(prompt, str):
        content: Any = prompt
        if n_images:  # HF multi-modal chat templates expect typed content parts
            content = [{"type": "image"}] * n_images + [{"type": "text", "text": prompt}]
        messages = [{"role": "user", "content": content}]
    else:
        messages = [dict(m) for m in prompt]
    texts: list[str] = []

    def slot(text: str) -> str:
        texts.append(text)
        return _SLOT.format(len(texts) - 1)

    for m in messages:
        if isinstance(m.get("content"), str):
            m["content"] = slot(m["content"])
        elif isinstance(m.get("content"), list):
            m["content"] = [dict(part, text=slot(part["text"])) if part.get("type") == "text" else part
                            for part in m["content"]]
    kwargs = {}
    if not thinking and "enable_thinking" in (getattr(tokenizer, "chat_template", None) or ""):
        kwargs["enable_thinking"] = False
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
    pieces = re.split("\x00zppo:(\\d+)\x00", rendered)
    if len(pieces) != 2 * len(texts) + 1:
        raise ValueError(f"the chat template of {getattr(tokenizer, 'name_or_path', 'this tokenizer')} does not "
                         "render every message text exactly once")
    ids: list[int] = []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:  # the template's own text: its control tokens are real
            ids += tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else []
        else:
            text = texts[int(piece)]
            ids += tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] if text else []
    return ids
