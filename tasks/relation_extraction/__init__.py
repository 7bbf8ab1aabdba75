"""Relation extraction: the directed relation between a marked head and tail entity, by an
entity-marker encoder head or generated as text."""
