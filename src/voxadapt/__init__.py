"""voxadapt: adapt Mistral's Voxtral to Korean (medical) speech by training its audio projector."""

__version__ = "0.1.0"
