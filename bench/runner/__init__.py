"""How a run executes: its lock, its progress lines, --repeat's fresh processes, its env block."""
