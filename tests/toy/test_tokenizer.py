from zppo_ray.worlds.toy.tokenizer import TAGS, build_tokenizer

CORPUS = ["In arithmetic modulo 10, compute 3+8*2-5.\n<think>3+8*2-5=3+6-5=9-5=4</think>\n\\boxed{4}"] * 50 + [
    "user assistant Below are two candidate responses"] * 20


def test_digits_and_operators_are_single_tokens_and_text_roundtrips():
    tok = build_tokenizer(CORPUS, vocab_size=300)
    text = "compute 1234+56*7=890 <candidate>\n\\boxed{42}</candidate>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    for ch in "1234567890+*=":
        assert ch in pieces
    assert not any(len(p) > 1 and any(c.isdigit() for c in p) for p in pieces)
    for tag in ("<candidate>", "</candidate>", "\\boxed{"):
        assert tag in pieces
    assert tok.decode(ids) == text


def test_chat_template_and_special_tokens():
    tok = build_tokenizer(CORPUS, vocab_size=300)
    s = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert s == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.pad_token_id != tok.eos_token_id
    assert all(t in tok.get_vocab() for t in TAGS)


def test_save_and_reload(tmp_path):
    from transformers import AutoTokenizer

    tok = build_tokenizer(CORPUS, vocab_size=300)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "<think>3+6=9</think>\n\\boxed{9}"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.chat_template == tok.chat_template
