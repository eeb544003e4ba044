"""The ``gmnerf-*`` commands (docs/tools.md); nothing below imports them."""
