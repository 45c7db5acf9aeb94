"""Qt views only. They subscribe to the session's events and send operator intents back."""
