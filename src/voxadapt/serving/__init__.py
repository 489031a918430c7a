"""The OpenAI-compatible transcription server behind `voxadapt serve`: engine, API, page."""
