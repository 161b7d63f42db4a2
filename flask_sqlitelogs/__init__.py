"""Every request and response of a Flask app, logged to rolling monthly SQLite databases."""
