"""Experiments on held-out phantoms: the paper's interactive experiment (``petloop demo``) and
the claims its numbers are checked against."""
