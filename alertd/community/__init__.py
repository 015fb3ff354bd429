"""The community page: members subscribe themselves (Flask, served by waitress)."""
