"""Identity: face embeddings and how similar two faces are."""
