"""The train phase: the training ladder's rows, their derived fields, the tutorials' own loop."""
