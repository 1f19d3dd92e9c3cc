"""What to measure and for how long: each row's price on this machine, the plan fitted to --budget."""
