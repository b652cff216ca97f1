"""The worker loop and its stages: validate, batch, dead letters, ledger, commit, hand-over."""
