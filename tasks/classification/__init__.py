"""Text classification: one label per text, by an encoder head or generated as text."""
