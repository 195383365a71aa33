"""The learner on a vision-language student: the image reaches logprobs and gradients (issue #11, point 1).

The student is a tiny Qwen3-VL built from config (zppo_ray/worlds/toy/vlm.py) around a tiny Qwen3 text model.
The reference is transformers' own sampling through the model's HF processor (Qwen3VLProcessor expanding
the image placeholder, the PIL image processor making pixel values): its per-token logprobs of what it
sampled must equal what the DeepSpeed learner computes for the same sample from the rollout's
representation (chat prompt ids with ONE placeholder, plus the image bytes). vLLM cannot serve a Qwen-VL
model on CPU here (README "Images"), so this is the comparison that can run.
"""

import dataclasses
import io
import socket
from pathlib import Path

import pytest
import torch
from PIL import Image

from zppo_ray.config import AlgoConfig, LearnerConfig
from zppo_ray.engine.prompts import chat_prompt_ids
from zppo_ray.learner.policy import PolicyLearner, check_items
from zppo_ray.types import TrainItem
from zppo_ray.worlds.toy.vlm import build_toy_vlm, render_expression

CORPUS = ["In arithmetic modulo 10, compute the expression in the image.\n<think>3+8=1</think>\n\\boxed{1}"] * 30
QUESTION = "In arithmetic modulo 10, compute the expression in the image from left to right."


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    from zppo_ray.worlds.toy.models import Arch, build_model
    from zppo_ray.worlds.toy.tokenizer import build_tokenizer

    root = tmp_path_factory.mktemp("vlm")
    tok = build_tokenizer(CORPUS, vocab_size=300)
    build_model(Arch(64, 2, 2, 1, 128), tok, 512, seed=0).save_pretrained(root / "student")
    tok.save_pretrained(root / "student")
    return str(build_toy_vlm(root / "student", root / "vlm"))


def hf_processor(path):
    """The model's HF processor without its video half (which needs torchvision): Qwen3VLProcessor's own
    text expansion and the image processor transformers picks without torchvision."""
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen3VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnly(Qwen3VLProcessor):
        def __init__(self, image_processor, tokenizer):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.vision_start_token, self.vision_end_token = "<|vision_start|>", "<|vision_end|>"
            for name in ("image_token", "video_token", "vision_start_token", "vision_end_token"):
                setattr(self, f"{name}_id", tokenizer.convert_tokens_to_ids(getattr(self, name)))
            ProcessorMixin.__init__(self, image_processor, tokenizer)

    return ImageOnly(AutoImageProcessor.from_pretrained(path), AutoTokenizer.from_pretrained(path))


@pytest.fixture(scope="module")
def sampled(vlm_dir):
    """transformers samples 12 tokens on an image question; returns (item, reference logprobs)."""
    from transformers import AutoModelForImageTextToText

    proc = hf_processor(vlm_dir)
    png = render_expression("3+8*2")
    image = Image.open(io.BytesIO(png)).convert("RGB")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    text = proc.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = proc(text=[text], images=[image], return_tensors="pt")
    assert (inputs["input_ids"] == proc.image_token_id).sum() == 3  # 96x32 px: 6x2 patches, merged 2x2
    model = AutoModelForImageTextToText.from_pretrained(vlm_dir, dtype=torch.float32).eval()
    torch.manual_seed(0)
    out = model.generate(**inputs, do_sample=True, max_new_tokens=12, min_new_tokens=12, output_logits=True,
                         return_dict_in_generate=True, temperature=1.0, top_k=0, top_p=1.0)
    completion = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    ref = torch.stack([lg[0].float().log_softmax(-1)[t] for lg, t in zip(out.logits, completion)])
    prompt_ids = chat_prompt_ids(proc.tokenizer, QUESTION, n_images=1)  # what a rollout's prompt_ids hold
    assert prompt_ids.count(proc.image_token_id) == 1
    return TrainItem(prompt_ids, completion, 0.5, images=(png,)), ref


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def learner(vlm_dir):
    torch.set_num_threads(1)
    return PolicyLearner(vlm_dir, LearnerConfig(micro_batch_size=2, lr=1e-2, eps=1.0, weight_decay=0.0,
                                                grad_clip=0.0), AlgoConfig(), rank=0, world_size=1,
                         master_addr="127.0.0.1", master_port=free_port(), seed=0)


def test_learner_logprobs_with_the_image_equal_the_samplers(learner, sampled):
    item, ref = sampled
    got = torch.tensor(learner.compute_logprobs([item])[0])
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-5)


def test_without_the_image_the_logprobs_differ(learner, sampled, vlm_dir):
    from transformers import AutoTokenizer

    item, ref = sampled
    text_only = TrainItem(chat_prompt_ids(AutoTokenizer.from_pretrained(vlm_dir), QUESTION), item.completion_ids, 0.5)
    blank = dataclasses.replace(item, images=(render_expression(""),))  # same placeholder, another picture
    for other in (text_only, blank):
        lp = torch.tensor(learner.compute_logprobs([other])[0])
        assert (lp - ref).abs().max() > 1e-3


def test_a_batch_mixing_image_and_text_items_matches_each_alone(learner, sampled):
    item, _ = sampled
    text = TrainItem(item.prompt_ids[:5], item.completion_ids[:4], 0.1)
    alone = [learner.compute_logprobs([it])[0] for it in (item, text)]
    together = learner.compute_logprobs([item, text])
    for a, b in zip(alone, together):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=1e-5)


def test_the_gradient_reaches_the_vision_tower(learner, sampled):
    item, _ = sampled
    tower = learner.engine.module.model.visual
    before = [p.detach().clone() for p in tower.parameters()]
    old = learner.compute_logprobs([item, item])
    items = [dataclasses.replace(item, old_logprobs=lp, advantage=a) for lp, a in zip(old, (1.0, 0.5))]
    learner.train_minibatch(items)
    moved = sum(int(not torch.equal(b, p.detach())) for b, p in zip(before, tower.parameters()))
    assert moved > 0  # pixel values are in the graph: the update changes the vision encoder


def test_a_text_only_student_refuses_image_items():
    item = TrainItem([1, 2, 3], [4, 5], 1.0, old_logprobs=[0.0, 0.0], images=(b"png",))
    assert "not a vision-language model" in check_items([item], None, train=True)
    assert check_items([item], None, train=True, multimodal=True) is None


def test_placeholders_must_match_the_images(learner):
    with pytest.raises(ValueError, match="2 image placeholder"):
        learner.vision.expand([7, learner.vision.image_token_id, 8, learner.vision.image_token_id],
                              torch.tensor([[1, 2, 4]]))


@pytest.mark.slow
def test_the_vlm_command_builds_a_student_and_loadable_image_questions(toy_world, tmp_path):
    """`python -m zppo_ray.worlds.toy.vlm OUT`: the toy student as a Qwen3-VL model, and the held-out toy
    questions asked about PNGs, in the project's native layout (what data.train / data.eval load)."""
    from transformers import AutoConfig

    from zppo_ray.config import SourceConfig
    from zppo_ray.data import load_questions
    from zppo_ray.worlds.toy.vlm import main

    main([str(tmp_path)])
    qs = load_questions(SourceConfig(path=str(tmp_path / "questions.jsonl")))
    assert len(qs) == 150 and all(len(q.images) == 1 and Path(q.images[0]).is_file() for q in qs)
    assert all("expression in the image" in q.text and not any(c.isdigit() for c in q.text.split("modulo 10")[1])
               for q in qs)  # the expression is in the picture only
    assert AutoConfig.from_pretrained(tmp_path / "model").vision_config is not None
