"""Social Meta-Learning: teach a student LM to learn from a teacher's language feedback."""

__version__ = "0.1.0"
