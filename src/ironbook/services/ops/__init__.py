"""The alert receiver and the ops console (`python -m ironbook.bootstrap alert-receiver`)."""
