"""Dataset parsers, one thin module per dataset, with the helpers they share (layouts, files, safe unpickling)."""
