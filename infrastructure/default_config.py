"""The embedded default: mock models only, so a fresh install answers with no key and no network."""

DEFAULT_CONFIG = {
    "model_list": [
        {"model_name": "mock-gpt", "litellm_params": {"model": "mock/mock-gpt"}},
        {"model_name": "mock-embedding", "litellm_params": {"model": "mock/mock-embedding"}},
        {"model_name": "mock-whisper", "litellm_params": {"model": "mock/mock-whisper"}},
    ],
}
