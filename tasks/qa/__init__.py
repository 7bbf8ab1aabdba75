"""Extractive question answering (SQuAD v1.1 format): answer spans by start/end pointers over the context, or generated as text."""
