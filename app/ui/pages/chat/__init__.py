"""The Chat page: conversations, the streaming view, the model bar and the composer."""
