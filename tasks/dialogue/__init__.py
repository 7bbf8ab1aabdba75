"""Dialogue response generation: a multi-turn history to the next turn, scored with BLEU-1/2,
Distinct-1/2 and perplexity."""
