"""hbtui console: a Textual operator console for the hbtui engine (talks ZeroMQ only)."""
