import sys, time, os
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2"); os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
from vllm import LLM, SamplingParams
def main():
    d = "/tmp/smol_cache/SmolLM2-135M-Instruct-0.1.2-b179c9523d0e"
    dtype = sys.argv[1]
    t0 = time.time()
    llm = LLM(d, dtype=dtype, seed=0, max_model_len=512, enforce_eager=True)
    start = time.time() - t0
    tok = llm.get_tokenizer()
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"What is {10+i} + {27+2*i}? Put the final answer in \\boxed{{}}."}], add_generation_prompt=True, tokenize=False) for i in range(32)]
    sp = SamplingParams(n=4, temperature=1.0, max_tokens=64, ignore_eos=True)
    llm.generate(prompts[:2], sp)  # warm-up
    t = time.time(); outs = llm.generate(prompts, sp); gen = time.time() - t
    ntok = sum(len(o.token_ids) for r in outs for o in r.outputs)
    print(f"RESULT dtype={dtype} start={start:.0f}s tokens={ntok} gen={gen:.1f}s tok/s={ntok/gen:.0f}")

if __name__ == '__main__':
    main()
