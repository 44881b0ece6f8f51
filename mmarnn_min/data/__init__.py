"""Data sets: the embedded SynthAffect generator and readers for the real data sets."""
