"""Post-update return distributions: update operators and the chunked sampling engine."""
