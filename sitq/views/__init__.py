"""Views: HTML tables, the live view and progress bars that show a queue in Jupyter."""
