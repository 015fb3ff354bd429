"""The community page: members sign themselves up, manage and leave by link.

``config`` is the ``community:`` section (imported by settings, so it stays free of the
web stack); ``app`` the Flask pages; ``serve`` runs them on waitress inside ``alertd run``;
``rules`` the page's decisions without HTTP (who may sign up, what a field may hold);
``mail`` the confirmation and manage-link mails; ``lookup`` the API calls the page makes
within the shared request budget; ``feeds`` the members' Atom feeds; ``provider`` the
members' searches for the cycle. The members table itself is ``alertd.members``.
"""
