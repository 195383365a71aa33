"""Generated worlds: question splits and the student/teacher models they come with (see worlds/base.py)."""
