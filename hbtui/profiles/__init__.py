"""Scheduling profiles shipped with hbtui."""
