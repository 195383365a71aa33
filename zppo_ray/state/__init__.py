"""What a run must not lose: the replay buffer, the question ledger, checkpoints, and their codec."""
