"""The vLLM side: prompts (light), the engine (imports vLLM on use), the weight push into it."""
