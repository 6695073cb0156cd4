"""Provider adapters: OpenAI-shaped requests in, provider wire format out, and back."""
