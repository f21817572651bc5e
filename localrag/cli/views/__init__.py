"""Presentation: rich output and JSON for each command. Stages stay free of printing."""
