"""Named-entity recognition: IOB2 tags by a softmax or CRF tagger over the encoder, or entities generated as text."""
