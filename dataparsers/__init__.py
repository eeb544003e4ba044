"""Dataset parsers, one thin module per dataset; installed as ``gmnerf_ns.dataparsers``."""
