"""Shared widgets: fit badges, stacked memory bars, cards, and the look of the whole window."""
