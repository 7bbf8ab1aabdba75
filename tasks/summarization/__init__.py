"""Abstractive summarization: a document to a short summary, scored with ROUGE."""
