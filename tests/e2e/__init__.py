"""End-to-end tier: guard serve with the real engine, driven by the official openai client."""
