"""Scoring: the one path from reference/hypothesis pairs to metrics.json.

edits       edit counts of one pair (characters, eojeol), sWER re-spacing, display alignment
rates       score_row (one utterance) and corpus_metrics (micro CER/WER/sWER over rows)
references  multi-reference: the closest reference a dual transcription allows
intervals   speaker-cluster bootstrap CIs and the paired comparison of two systems
terms       medical term recall from a terms file
breakdowns  metrics per metadata value and duration bucket; most frequent errors
metrics     compute_metrics: everything metrics.json holds, in one call
rows        references from manifests, hypotheses from files, scored rows and their files
"""
